"""Video translation: frames decoded by PyAV (or DALI) ahead of the model, translated in batches by the
caller's function, encoded to H.264 behind it with the input's rate, timestamps, rotation and audio.

translate_video is the entry point; is_video and VIDEO_EXTENSIONS tell videos from images in a folder.
"""

from fastcycle.video.pipeline import VideoReport, translate_video
from fastcycle.video.probe import VIDEO_EXTENSIONS, is_video

__all__ = ["VIDEO_EXTENSIONS", "VideoReport", "is_video", "translate_video"]
