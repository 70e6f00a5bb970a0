"""Bench models for both runtimes, from the very same safetensors.

Writes, next to all-MiniLM-L6-v2 (www/models/):
  all-MiniLM-L6-v2/onnx/model.onnx, model_fp16.onnx, model_quantized.onnx     (BertModel → last_hidden_state)
  minilm-l6-mlm/onnx/model.onnx, model_fp16.onnx, model_quantized.onnx        (BertForMaskedLM → logits: the
                                                               default fill-mask model, assembled by
                                                               scripts/assemble-mlm.py)
The fp16 and q8 graphs are made as transformers.js' own exports are: onnxruntime's float16 conversion (inputs and
outputs kept f32) and dynamic uint8 quantisation. Each f32 graph is checked against PyTorch with onnxruntime (max abs
diff printed, ≤ 1e-4 asserted); the fp16 one's difference is printed.
Run: python scripts/export_onnx.py [MODELS_DIR]   (pip install -r scripts/requirements.txt onnx onnxscript onnxruntime)
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16
from transformers import BertForMaskedLM, BertModel, BertTokenizerFast

MODELS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "www" / "models"
TEXT = "Paris is the [MASK] of France, and the cat sat on the mat while the dog ran."


class Wrapped(torch.nn.Module):
    """Positional inputs and one plain output, as transformers.js feeds and reads them."""

    def __init__(self, model, output):
        super().__init__()
        self.model, self.output = model, output

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return getattr(out, self.output)


@torch.no_grad()
def export(model, output: str, directory: Path, tok) -> None:
    onnx_dir = directory / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    path = onnx_dir / "model.onnx"
    enc = tok([TEXT, "short one"], return_tensors="pt", padding=True)
    args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    batch, seq = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length", max=512)
    axes = {0: batch, 1: seq}
    torch.onnx.export(
        Wrapped(model, output).eval(), args, str(path), input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=[output], dynamic_shapes=(axes, axes, axes), opset_version=18, dynamo=True, external_data=False,
    )
    quantize_dynamic(str(path), str(onnx_dir / "model_quantized.onnx"), weight_type=QuantType.QUInt8)
    fp16 = onnx_dir / "model_fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(fp16))
    want = getattr(model(**enc), output).numpy()
    feeds = {k: v.numpy() for k, v in enc.items()}
    real = enc["attention_mask"].numpy().astype(bool)  # padded positions are don't-care in both
    for graph in [path, fp16]:
        got = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        diff = float(np.abs(got[real] - want[real]).max())
        print(f"{directory.name} {graph.name}: onnx vs PyTorch max abs diff {diff:.2e}")
        assert graph == fp16 or diff <= 1e-4


def main() -> None:
    minilm = MODELS / "all-MiniLM-L6-v2"
    tok = BertTokenizerFast.from_pretrained(minilm)
    export(BertModel.from_pretrained(minilm, attn_implementation="eager"), "last_hidden_state", minilm, tok)

    mlm_dir = MODELS / "minilm-l6-mlm"
    mlm = BertForMaskedLM.from_pretrained(mlm_dir, attn_implementation="eager")
    export(mlm, "logits", mlm_dir, tok)


if __name__ == "__main__":
    main()
