"""The ServerApp: FedLD, then RFFL (labkit.flower's strategies); the results go to the run config's "out-file"."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from labkit_flower_app import task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    result = task.run_strategies(grid, num_rounds=int(context.run_config["num-rounds"]))
    if out := str(context.run_config.get("out-file", "")):
        task.write_result(out, result)
