"""A run's closing lines (results table, where it was written) come after the progress bar's last
frame: they are printed in the module's ``teardown``, which Lightning calls after every callback's
(the progress bar stops in its own)."""

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from latentlit.lit.callbacks import ClosingLines


class _Bar(Callback):  # stands for the progress bar: its last frame is drawn when it stops, in teardown
    def teardown(self, trainer, pl_module, stage):
        print("bar: last frame")


class _Module(ClosingLines, L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def predict_step(self, batch, batch_idx):
        return self.layer(batch)

    def on_predict_end(self):
        self.say_at_end("results table")
        self.say_at_end("written to somewhere")


def test_closing_lines_follow_the_bar_and_are_said_once(capsys):
    module = _Module()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[_Bar()])
    trainer.predict(module, torch.utils.data.DataLoader(torch.zeros(4, 2), batch_size=2))
    assert capsys.readouterr().out.splitlines() == ["bar: last frame", "results table", "written to somewhere"]
    module.teardown("predict")  # nothing left to say
    assert capsys.readouterr().out == ""
