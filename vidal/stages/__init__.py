"""One file per stage; this registry maps stage names to their classes."""

from vidal.stages.audio import AudioStage
from vidal.stages.audio_caption import AudioCaptionStage
from vidal.stages.base import Stage, StageContext
from vidal.stages.captions import CaptionsStage
from vidal.stages.clip import ClipStage
from vidal.stages.dedup import DedupStage
from vidal.stages.depth import DepthStage
from vidal.stages.enhance import EnhanceStage
from vidal.stages.infrared import InfraredStage
from vidal.stages.keyframes import KeyframesStage
from vidal.stages.probe import ProbeStage
from vidal.stages.vl_filter import VLFilterStage

STAGES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (
        ProbeStage,
        KeyframesStage,
        AudioStage,
        ClipStage,
        VLFilterStage,
        DedupStage,
        DepthStage,
        InfraredStage,
        CaptionsStage,
        EnhanceStage,
        AudioCaptionStage,
    )
}

__all__ = ["STAGES", "Stage", "StageContext"]
