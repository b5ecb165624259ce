"""The ClientApp: labkit's FedLD or RFFL client, as the message's config "labkit-method" says."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from labkit import flower as lf
from labkit_flower_app import task

_methods = {
    "fedld": lf.fedld_client_app(task.fedld_data, task.fedld_model, lam=task.LAM, opt=task.FEDLD_OPT),
    "rffl": lf.rffl_client_app(task.rffl_data, task.rffl_model, gamma=task.GAMMA, **task.RFFL_TRAIN),
}

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _methods[msg.content["config"]["labkit-method"]](msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _methods[msg.content["config"]["labkit-method"]](msg, context)
