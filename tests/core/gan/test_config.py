import pytest

from core.gan.config import ConfigError, TrainConfig, parse_set_options


def test_defaults_keep_the_papers_network_with_the_measured_rates():
    config = TrainConfig(steps=1)
    assert (config.z_dim, config.g_channels, config.d_channels, config.img_size) == (100, 64, 64, 64)
    assert (config.batch_size, config.beta1, config.beta2, config.loss) == (64, 0.5, 0.999, "bce")
    # docs/quality-ablations.md: G faster than the paper's 2e-4, D slower than G, DiffAugment without cutout
    assert (config.lr, config.lr_d, config.aug_policies) == (8e-4, 4e-4, ("color", "translation"))


def test_the_papers_rates_are_one_set_away():
    config = TrainConfig.from_dict(parse_set_options(["steps=1", "lr=0.0002", "lr_d=none"]))
    assert (config.lr, config.lr_d) == (2e-4, None)


def test_unknown_key_names_it():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"steps": 10, "learning_rate": 0.1})
    assert info.value.field == "learning_rate"
    assert "unknown config key" in str(info.value)


@pytest.mark.parametrize("field,value", [
    ("img_size", 48), ("img_channels", 2), ("z_dim", 0), ("lr", 0), ("lr", float("nan")), ("beta1", 1.0),
    ("loss", "wasserstein"), ("diffaugment", "color,rotate"), ("ema", 1.0), ("batch_size", 0), ("steps", -1),
    ("steps", "ten"), ("spectral_norm", "maybe"), ("steps", 1.5), ("steps", True), ("precision", "int4"),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"steps": 10, field: value})
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_work_must_be_given():
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig.from_dict({})


def test_cli_strings_are_coerced():
    config = TrainConfig.from_dict(parse_set_options(["steps=12", "spectral_norm=true", "lr=1e-4",
                                                      "diffaugment=color,cutout", "epochs=none"]))
    assert config.steps == 12 and config.spectral_norm is True and config.lr == 1e-4
    assert config.aug_policies == ("color", "cutout") and config.epochs is None


def test_set_option_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set_options(["steps"])


def test_round_trip_through_dict():
    config = TrainConfig.from_dict({"steps": 5, "img_size": 128, "loss": "hinge"})
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.num_blocks == 5


def test_every_problem_is_reported_together():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"steps": 0, "img_size": 48, "loss": "l2", "colour": 1})
    assert [e.field for e in info.value.all] == ["colour", "img_size", "steps", "loss"]  # unknown keys first
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"steps": "many", "img_size": 48})
    assert [e.field for e in info.value.all] == ["steps"]  # ranges are checked once every value has its type
    assert info.value is info.value.all[0]


def test_eval_nets_are_the_metrics_feature_nets():
    # config.py cannot import core.gan.metrics (torch; the API reads the config), so it spells them again.
    from core.gan.config import EVAL_NETS
    from core.gan.metrics import FEATURE_NETS

    assert EVAL_NETS == ("auto", *FEATURE_NETS)


def test_lr_d_can_follow_lr_and_is_checked_like_it():
    assert TrainConfig.from_dict(parse_set_options(["steps=1", "lr_d=8e-4"])).lr_d == 8e-4
    assert TrainConfig.from_dict(parse_set_options(["steps=1", "lr_d=none"])).lr_d is None
    for bad in (0, 1.5, "fast"):
        with pytest.raises(ConfigError) as info:
            TrainConfig.from_dict({"steps": 1, "lr_d": bad})
        assert info.value.field == "lr_d"
    assert TrainConfig.json_schema()["properties"]["lr_d"]["type"] == ["number", "null"]
