"""GPU smoke check: train.py on a CUDA device (tiny in-process encoder), then the saved model on CUDA vs CPU.

    python benchmarks/gpu_smoke.py

Prints the device used, the trained dev nDCG@10 and the max abs difference of CUDA vs CPU embeddings.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

import train  # noqa: E402
from tests.training_fixtures import pair_rows, save_tiny_encoder, write_jsonl  # noqa: E402


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        encoder = save_tiny_encoder(root / "encoder")
        data = write_jsonl(root / "pairs.jsonl", pair_rows(200))
        code = train.main([
            "--encoder", str(encoder), "--data", str(data), "--output-dir", str(root / "run"),
            "--cache-dir", str(root / "cache"), "--quiet", "--epochs", "3",
        ])  # fmt: skip
        assert code == 0, code
        summary = json.loads((root / "run" / "training_summary.json").read_text())
        texts = [row["query"] for row in pair_rows(200)[:32]]
        on_gpu = SentenceTransformer(str(root / "run"), trust_remote_code=True, device="cuda")
        on_cpu = SentenceTransformer(str(root / "run"), trust_remote_code=True, device="cpu")
        differences = {
            side: (getattr(on_gpu, f"encode_{side}")(texts, convert_to_tensor=True).cpu()
                   - getattr(on_cpu, f"encode_{side}")(texts, convert_to_tensor=True)).abs().max().item()
            for side in ("query", "document")
        }  # fmt: skip
        print(json.dumps({
            "device": torch.cuda.get_device_name(0), "model_device": str(on_gpu.device),
            "dev_ndcg@10": summary["trained_dev"]["ndcg@10"], "base_dev_ndcg@10": summary["base_dev"]["ndcg@10"],
            "cuda_vs_cpu_max_abs_diff": differences,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
