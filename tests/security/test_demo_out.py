"""Issue 11, item 10: `vidal demo --out X` never deletes anything in a folder it did not make.
X/train holding someone's checkpoints is refused with one sentence (exit 2) and left as it
was; --force, or a folder the demo made (its marker), lets it run."""

from __future__ import annotations

from vidal import demo
from vidal.cli import main


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    out = tmp_path / "mine"
    precious = out / "train" / "checkpoints" / "last.pt"
    precious.parent.mkdir(parents=True)
    precious.write_bytes(b"weeks of training")
    assert main(["demo", "--out", str(out), "--local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was not made by vidal demo" in err and "--force" in err
    assert precious.read_bytes() == b"weeks of training"
    assert sorted(p.name for p in out.iterdir()) == ["train"]  # nothing written either


def test_new_empty_or_own_folders_and_force_are_claimed(tmp_path):
    demo.claim_folder(tmp_path / "new")  # does not exist yet
    (tmp_path / "empty").mkdir()
    demo.claim_folder(tmp_path / "empty")
    demo.claim_folder(tmp_path / "new")  # made by the demo before: its marker says so
    other = tmp_path / "other"
    (other / "train").mkdir(parents=True)
    demo.claim_folder(other, force=True)
    for folder in ("new", "empty", "other"):
        assert (tmp_path / folder / demo.DEMO_MARKER).is_file()
