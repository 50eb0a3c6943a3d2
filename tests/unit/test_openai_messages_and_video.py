"""`build_openai_messages` takes `image=`/`messages=` (and the other media) as the SDK does;
`VisualClassifierClass.video_to_frames` decodes a real video into frames."""

from __future__ import annotations

import base64
import io

import pytest

from modelpack.runtime import VisualClassifierClass
from modelpack.runtime.helpers import build_openai_messages
from modelpack.runtime.types import Audio, Image, Video


def test_prompt_with_history_and_media() -> None:
    history = [{"role": "system", "content": "be brief"}]
    messages = build_openai_messages(
        "what is this?",
        image=Image(bytes=b"\x89PNG"),
        images=[Image(url="https://example.com/a.jpg")],
        audio=Audio(bytes=b"RIFF"),
        video=Video(url="https://example.com/v.mp4"),
        messages=history,
    )
    assert messages[0] == history[0]
    content = messages[1]["content"]
    assert messages[1]["role"] == "user" and content[0] == {"type": "text", "text": "what is this?"}
    assert content[1]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(b"\x89PNG").decode()
    assert content[2]["image_url"]["url"] == "https://example.com/a.jpg"
    assert content[3] == {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(b"RIFF").decode(), "format": "wav"},
    }
    assert content[4] == {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}


def test_text_only_stays_a_string_and_chat_history_still_works() -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert build_openai_messages("again", chat_history=history)[-1] == {"role": "user", "content": "again"}
    assert build_openai_messages(messages=history) == history


def test_video_to_frames_decodes_a_video() -> None:
    import av
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for shade in (0, 120, 240):
            frame = av.VideoFrame.from_image(PILImage.new("RGB", (32, 24), (shade, shade, shade)))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    frames = list(VisualClassifierClass.video_to_frames(buffer.getvalue()))
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[1].time == pytest.approx(100.0)
    assert PILImage.open(io.BytesIO(frames[2].image.bytes)).size == (32, 24)
