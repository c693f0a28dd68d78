"""A sink that keeps the batches it is given, for feeds run in-process."""


class ListSink:
    name = "list"

    def __init__(self):
        self.batches = []

    @staticmethod
    def encode(document):
        return document.to_json().encode()

    def send(self, batch):
        self.batches.append(batch)
