"""Every config group option and every experiment composes; core objects instantiate from them."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

CONF = Path(__file__).resolve().parents[2] / "src" / "facelearn" / "conf"
GROUPS = ["data", "backbone", "head", "method", "optimizer", "scheduler", "trainer", "logger", "callbacks",
          "benchmark"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="facelearn.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def resolve(cfg):
    # ${hydra:...} resolvers need a HydraConfig; set it as a running app would.
    from hydra.core.hydra_config import HydraConfig
    with open_dict(cfg):
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.runtime.output_dir = "/tmp/facelearn-compose"
        cfg.hydra.runtime.cwd = "/tmp"
        if OmegaConf.is_missing(cfg.paths, "dataset_dir"):  # the dataset recipes' folder, given on the command line
            cfg.paths.dataset_dir = "/data/ms1m-retinaface-t1"
    HydraConfig.instance().set_config(cfg)
    return {k: _resolve(cfg, k) for k in cfg
            if k != "hydra"}


def _resolve(cfg, key):
    node = cfg[key]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def test_top_level_conf_is_the_package_conf():
    top = Path(__file__).resolve().parents[2] / "conf"
    assert top.resolve() == CONF.resolve()


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose_train([f"{group}={option}"])
    resolved = resolve(cfg)
    assert group in resolved


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_composes(name):
    cfg = compose_train([f"+experiment={name}"])
    resolved = resolve(cfg)
    assert resolved["task_name"] == name
    assert resolved["monitor"].startswith("bench/")
    bench = resolved["monitor"].split("/")[1]
    folder = [b for b in resolved["benchmark"].values() if b["_target_"].endswith("BinFolder")]
    # a folder of .bin sets reports each under its file's name
    assert bench in resolved["benchmark"] or any(bench in b["targets"] for b in folder), \
        "the monitored benchmark must be configured"


@pytest.mark.parametrize("head", [h for h in options("head") if h != "none"])
def test_heads_instantiate_from_config(head):
    cfg = compose_train([f"head={head}", "head.num_classes=7"])
    resolve(cfg)
    module = instantiate(cfg.head)
    assert module.num_classes == 7


@pytest.mark.parametrize("backbone", ["small", "mobilefacenet", "iresnet18"])
def test_backbones_instantiate_from_config(backbone):
    import torch
    cfg = compose_train([f"backbone={backbone}", "data.image_size=32"])
    resolve(cfg)
    net = instantiate(cfg.backbone).eval()
    out = net(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, cfg.backbone.embedding_size)


def test_experiment_not_in_root_defaults():
    text = (CONF / "train.yaml").read_text()
    assert "experiment" not in text.split("_self_")[0].split("defaults:")[1]


@pytest.mark.parametrize("group,option", [(g, o) for g in ("schedule", "gallery", "augment", "objective")
                                          for o in options(g)])
def test_every_plus_group_option_composes_on_an_lfw_experiment(group, option):
    base = "dm_lfw" if option == "dm_paper" else "sst_lfw"
    resolved = resolve(compose_train([f"+experiment={base}", f"+{group}={option}"]))
    if group == "schedule":
        assert resolved["trainer"]["max_epochs"] >= 1
        if option == "dm_paper":
            assert resolved["optimizer"]["nesterov"] is True and resolved["optimizer"]["lr"] == 0.01
    if group == "gallery":
        assert resolved["method"]["variant"] == "momentum"


README_ALIGNMENT_LINES = [
    ["+experiment=conventional_lfw_shallow", "alignment=five_point"],
    ["data=folder", "data.train.root=/data/photos", "alignment=five_point", "benchmark=[lfw_view2,cfp_fp]",
     "monitor=bench/lfw_view2/accuracy"],
    ["+experiment=conventional_lfw_shallow", "backbone=sface", "alignment=five_point", "data.image_size=112"],
]


@pytest.mark.parametrize("overrides", README_ALIGNMENT_LINES, ids=lambda o: " ".join(o))
def test_readme_alignment_commands_align_every_source(overrides):
    """The README's alignment lines compose, and the one option reaches the training data and every benchmark."""
    cfg = resolve(compose_train(overrides))
    target = "facelearn.data.landmarks.FivePointAlignment"
    assert cfg["alignment"]["_target_"] == target
    assert cfg["data"]["train"]["alignment"]["_target_"] == target
    for name, bench in cfg["benchmark"].items():
        assert bench["alignment"]["_target_"] == target, name
    assert cfg["alignment"]["detector"].endswith("models/face_detection_yunet_2023mar_int8bq.onnx")


def test_sface_backbone_builds_without_weights_at_112():
    import torch
    cfg = compose_train(["backbone=sface", "backbone.weights=null", "data.image_size=112"])
    resolve(cfg)
    net = instantiate(cfg.backbone).eval()
    assert net(torch.zeros(1, 3, 112, 112)).shape == (1, 128)


@pytest.mark.parametrize("name", [n for n in options("experiment")
                                  if compose_train([f"+experiment={n}"]).get("freeze")])
def test_an_experiments_freeze_names_a_module_of_its_backbone(name):
    from facelearn.nn.freeze import frozen_modules
    cfg = compose_train([f"+experiment={name}", "backbone.weights=null"])
    resolve(cfg)
    assert frozen_modules(instantiate(cfg.backbone), cfg.freeze)


def test_unknown_freeze_module_stops_before_any_data():
    from facelearn.cli.validate import validate_train_config
    cfg = compose_train(["freeze=layer9"])
    with pytest.raises(ValueError, match=r"freeze=layer9: SmallFaceNet has no module of that name"):
        validate_train_config(cfg)


# Every option and preset passes the signature check (conf keys are parameters of their targets, values fit the
# annotations): a YAML key the code does not take would otherwise be refused only when a user selects it.
@pytest.mark.parametrize("overrides", [[f"{g}={o}"] for g in GROUPS for o in options(g)]
                         + [[f"+experiment={n}"] for n in options("experiment")]
                         + [[f"+debug={d}"] for d in options("debug")]
                         + [["ida=both"], ["classifier=partial_fc", "head=arcface"]])
def test_every_option_passes_the_signature_check(overrides):
    from facelearn.cli.schema import FILLED_AT_RUNTIME, check_config
    cfg = compose_train(overrides)
    resolve(cfg)
    try:
        check_config(cfg)
    except ValueError as e:  # only a value the user must give (data.train.path=..., benchmark.bin.path=...)
        assert "is required" in str(e) and not any(k in str(e) for k in FILLED_AT_RUNTIME), e
