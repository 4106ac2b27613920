"""Installs the image classification pipeline: `pipeline`, `components`, `trainer_module`."""
from setuptools import find_packages, setup

setup(
    name="imgpipe",
    version="0.1.0",
    description="TFX image classification pipeline: folder of images -> evaluated, servable EfficientNetB3.",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                    "trainer_module", "trainer_module.*", "kubeflow", "kubeflow.*"]),
    install_requires=[
        "tfx[kfp]==1.16.0",
        "apache-beam[gcp]==2.61.0",
        "tensorflow==2.16.2",
        "tf_keras==2.16.0",
        "tensorflow-data-validation==1.16.1",
        "tensorflow-transform==1.16.0",
        "tensorflow-model-analysis==0.47.1",
        "ml-metadata==1.16.0",
        "kfp==2.5.0",
        "joblib<1.6",
        "pillow",
        "PyYAML",
        "psutil",
    ],
    extras_require={"test": ["pytest==8.3.4", "pytest-timeout==2.3.1",
                             "pytest-xdist==3.8.0"]},
    entry_points={"console_scripts": ["imgpipe=pipeline.cli:main"]},
)
