"""The channels-last conv extractor (export/conv_rewrite.py): same numbers as the Conv1d form,
chosen per format, and priced the same way by the latency profiler."""
import pytest
import torch
from torch import nn

from edgekit import zoo
from edgekit.export.conv_rewrite import (ChannelsLastConvBlock, ChannelsLastConvFrontend, ChannelsLastGroupNorm,
                                         FrameLinearConv)
from edgekit.export.prepare import CHANNELS_LAST_CONV, export_form, prepare_module
from edgekit.latency.modules import build_block_module
from edgekit.latency.signature import make
from edgekit.models.frontend import ConvBlock, ConvFrontend


@pytest.mark.parametrize("c_in,c_out,k,s,t", [(1, 8, 10, 5, 400), (8, 6, 3, 2, 99), (8, 6, 3, 2, 100),
                                             (6, 4, 2, 2, 41), (4, 4, 4, 2, 37), (3, 5, 5, 3, 50)])
def test_frame_linear_conv_equals_conv1d(c_in, c_out, k, s, t):
    torch.manual_seed(0)
    conv = nn.Conv1d(c_in, c_out, k, stride=s, bias=True)
    x = torch.randn(2, c_in, t)
    flc = FrameLinearConv(conv)
    y = flc(x.transpose(1, 2))
    assert y.shape == (2, flc.out_frames(t), c_out)
    torch.testing.assert_close(y, conv(x).transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_frame_linear_conv_refuses_what_it_cannot_express():
    with pytest.raises(ValueError, match="unpadded"):
        FrameLinearConv(nn.Conv1d(2, 2, 3, padding=1))
    with pytest.raises(ValueError, match="ungrouped"):
        FrameLinearConv(nn.Conv1d(4, 4, 3, groups=2))


def test_channels_last_group_norm_matches_and_checks_length():
    gn = nn.GroupNorm(6, 6)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 30) * 3
    cl = ChannelsLastGroupNorm(gn, 30)
    torch.testing.assert_close(cl(x.transpose(1, 2)), gn(x).transpose(1, 2), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="re-prepare"):
        cl(torch.randn(1, 31, 6))
    with pytest.raises(ValueError, match="one group per channel"):
        ChannelsLastGroupNorm(nn.GroupNorm(2, 6), 30)


@pytest.mark.parametrize("name", ["tiny-hubert", "tiny-pruned", "tiny-fithubert"])
def test_channels_last_frontend_matches_conv_frontend(name):
    fe = zoo.create_model(name).feature_extractor.eval()
    assert isinstance(fe, ConvFrontend)
    x = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(ChannelsLastConvFrontend(fe, 4000)(x), fe(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="receptive field"):
        ChannelsLastConvFrontend(fe, 5)


def test_prepare_picks_the_conv_form_per_format():
    model, spec = zoo.create_model("tiny-hubert"), zoo.get_spec("tiny-hubert")
    x = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        ref = model(x).last_hidden_state
    for fmt, channels_last in CHANNELS_LAST_CONV.items():
        wrapper = prepare_module(model, spec, fmt=fmt, samples=4000)
        fe = wrapper.encoder.feature_extractor
        assert isinstance(fe, ChannelsLastConvFrontend) == channels_last, fmt
        with torch.no_grad():
            torch.testing.assert_close(wrapper(x), ref, atol=1e-5, rtol=1e-4)
    assert CHANNELS_LAST_CONV["executorch"]
    with pytest.raises(ValueError, match="pass samples"):
        prepare_module(model, spec, fmt="executorch")


def test_export_form_gives_blocks_the_export_rewrites():
    sig = make("frontend.conv1", "conv", cin=8, cout=6, k=3, s=2, pad=0, n=50, bias=0, norm=1, glu=0)
    module, x = build_block_module(sig)
    et, x_et = export_form(module, x, "executorch")
    assert isinstance(et, ChannelsLastConvBlock) and x_et.shape == (1, 50, 8)
    with torch.no_grad():
        torch.testing.assert_close(et(x_et), module(x).transpose(1, 2), atol=1e-5, rtol=1e-4)
    onnx, x_onnx = export_form(module, x, "onnx")
    assert isinstance(onnx.conv, ConvBlock) and x_onnx is x
    assert not any(isinstance(m, nn.GroupNorm) for m in onnx.modules())  # the norm rewrite still runs
    # The filterbank's GLU subsampler conv keeps its [B, C, T] form and input.
    glu, xg = build_block_module(make("frontend.subsample0", "conv", cin=8, cout=12, k=3, s=2, pad=1, n=20, bias=1,
                                      norm=0, glu=1))
    glu_et, xg_et = export_form(glu, xg, "executorch")
    assert xg_et is xg and isinstance(glu_et.conv, nn.Conv1d)
    with torch.no_grad():
        torch.testing.assert_close(glu_et(xg), glu(xg))
    # An encoder layer's attention gets the same bmm form a whole model's does.
    attn, xa = build_block_module(make("layer0.attention", "attention", e=16, h=2, hd=8, t=7, pre=0))
    rewritten, _ = export_form(attn, xa, "onnx")
    assert type(rewritten.inner).__name__ == "BmmAttention"
    with torch.no_grad():
        torch.testing.assert_close(rewritten(xa), attn(xa), atol=1e-5, rtol=1e-4)
