from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("omnikit/version.py").read_text(), version)

extras = {
    "audio": ["torchaudio>=2.9", "encodec>=0.1.1,<0.2"],
    "vision": ["torchvision>=0.24", "timm>=1.0,<1.1"],
    "video": ["av>=12", "decord>=0.6; platform_machine == 'x86_64'"],
    "plot": ["matplotlib>=3.8"],
    "finetune": ["peft>=0.13"],
    "test": [
        "transformers>=5.0,<6",
        "vector-quantize-pytorch>=1.20",
        "pytest>=8",
        "pytest-xdist>=3.5",
        "ruff>=0.6",
        "hypothesis>=6.100",
        "jupytext>=1.16",
        "nbclient>=0.10",
        "nbmake>=1.5",
        "ipykernel>=6.29",
    ],
    "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "mkdocs-jupyter>=0.25"],
    # flash-attn builds from source against a local CUDA toolkit, so it is never part of "dev".
    "cuda": ["flash-attn>=2.6"],
}
extras["all"] = sorted({dep for name in ("audio", "vision", "video", "plot", "finetune") for dep in extras[name]})
extras["dev"] = sorted({dep for name, deps in extras.items() if name != "cuda" for dep in deps})

setup(
    name="omnikit",
    version=version["__version__"],
    description="Omni-modal building blocks for PyTorch: audio, video, MoE, fusion, Thinker-Talker.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["omnikit", "omnikit.*"]),
    install_requires=["torch>=2.5", "einops>=0.7", "safetensors>=0.4", "numpy>=1.24", "tqdm>=4.60"],
    extras_require=extras,
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
