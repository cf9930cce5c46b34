"""Audio tasks: raw-waveform modelling and generation with a multi-scale (SaShiMi-style)
Mamba network, and a clip classifier that scores generated samples. Importing this
package registers the task names ``audio_pretrain`` and ``audio_classify``."""
from .. import register_task
from .classify import AudioClassify, AudioClassifyConfig
from .pretrain import AudioPretrain, AudioPretrainConfig

register_task(AudioPretrain)
register_task(AudioClassify)

__all__ = ["AudioClassify", "AudioClassifyConfig", "AudioPretrain", "AudioPretrainConfig"]
