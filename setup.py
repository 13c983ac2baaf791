from setuptools import find_packages, setup

setup(
    name="roberta-toolkit",
    version="0.1.0",
    description="fairseq-compatible RoBERTa pretraining and fine-tuning on current Python and PyTorch",
    python_requires=">=3.10",
    packages=find_packages(include=["roberta", "roberta.*"]) + ["tasks", "criterions"],
    install_requires=["torch>=2.2", "numpy", "sentencepiece", "regex", "tqdm"],
    extras_require={
        "test": ["pytest", "hypothesis", "transformers", "safetensors", "scipy", "scikit-learn", "mypy>=2.4",
                 "tensorboard", "matplotlib"],
        "plot": ["matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "roberta-preprocess=roberta.cli.preprocess:cli_main",
            "roberta-train=roberta.cli.train:cli_main",
            "roberta-validate=roberta.cli.validate:cli_main",
            "roberta-bpe=roberta.cli.bpe:cli_main",
            "roberta-convert=roberta.cli.convert:cli_main",
            "roberta-sweep=roberta.cli.sweep:cli_main",
            "roberta-plot=roberta.cli.plot:cli_main",
        ],
    },
)
