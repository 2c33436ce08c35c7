"""Config: defaults < pipeline YAML < key=value overrides, typed; bad keys and values are
errors that name the key."""

from __future__ import annotations

import pytest

from vidal.config import PIPELINES_DIR, Config, ConfigError, load_config
from vidal.stages.clip import ClipStage
from vidal.stages.keyframes import KeyframesStage


def test_defaults_are_typed_stage_dataclasses():
    config = load_config()
    assert isinstance(config, Config)
    assert isinstance(config.clip, ClipStage)
    assert isinstance(config.keyframes, KeyframesStage)
    assert [s.name for s in config.pipeline()] == config.stages


def test_overrides_are_converted_to_the_declared_types():
    config = load_config(
        "demo",
        [
            "clip.crf=30",
            "probe.max_duration=10",
            "keyframes.num_frames=4",
            "clip.keep_audio=false",
            "runner.num_cpus=3",
            "shards=7",
            "keyframes.mode=snap",
        ],
    )
    assert config.clip.crf == 30 and type(config.clip.crf) is int
    assert config.probe.max_duration == 10.0 and type(config.probe.max_duration) is float
    assert config.keyframes.num_frames == 4
    assert config.clip.keep_audio is False
    assert config.runner.num_cpus == 3
    assert config.shards == 7
    assert config.keyframes.mode == "snap"


def test_overrides_win_over_the_yaml_and_the_yaml_over_defaults(tmp_path):
    yaml = tmp_path / "p.yaml"
    yaml.write_text("name: mine\nshards: 5\nclip:\n  crf: 28\n  short_side: 320\n")
    config = load_config(str(yaml), ["clip.crf=31"])
    assert config.name == "mine"
    assert config.shards == 5
    assert config.clip.short_side == 320  # from the YAML
    assert config.clip.crf == 31  # the override beats the YAML
    assert config.clip.preset == ClipStage().preset  # untouched default


@pytest.mark.parametrize(
    "override, key",
    [
        ("clip.nonexistent=1", "nonexistent"),
        ("bogus=1", "bogus"),
        ("runner.bogus_field=2", "bogus_field"),
    ],
)
def test_unknown_override_key_is_an_error_naming_it(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config("demo", [override])


def test_unknown_key_in_yaml_is_an_error_naming_it(tmp_path):
    yaml = tmp_path / "p.yaml"
    yaml.write_text("keyframes:\n  num_frame: 8\n")  # typo: num_frame
    with pytest.raises(ConfigError, match="num_frame"):
        load_config(str(yaml))


@pytest.mark.parametrize(
    "override, key",
    [
        ("clip.crf=abc", "clip.crf"),
        ("shards=many", "shards"),
        ("probe.max_duration=long", "probe.max_duration"),
        ("clip.keep_audio=maybe", "clip.keep_audio"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("demo", [override])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("stages=[probe,nope]", "nope"),
        ("shards=0", "shards"),
        ("runner.kind=k8s", "runner.kind"),
        ("keyframes.mode=fast", "keyframes.mode"),
    ],
)
def test_invalid_values_are_errors(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config("demo", [override])


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("demo", ["clip.crf"])


def test_missing_pipeline_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="no-such-pipeline"):
        load_config("no-such-pipeline")


@pytest.mark.parametrize("path", sorted(PIPELINES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_pipeline_loads(path):
    by_name = load_config(path.stem)
    by_path = load_config(str(path))
    assert by_name == by_path
    assert by_name.pipeline()


def test_demo_pipeline():
    config = load_config("demo")
    assert config.name == "demo"
    assert config.stages[0] == "probe"
    assert config.keyframes.num_frames == 8


def test_vidal10m_pipeline_has_the_papers_settings():
    config = load_config("vidal10m")
    assert config.keyframes.num_frames == 8
    assert config.probe.max_duration == 20
    assert config.clip.short_side == 256
    assert config.audio.sample_rate == 16000
    assert config.shards >= 1


def test_to_dict_round_trips_through_overrides():
    config = load_config("demo", ["clip.crf=27"])
    as_dict = config.to_dict()
    assert as_dict["clip"]["crf"] == 27
    assert as_dict["stages"] == config.stages
