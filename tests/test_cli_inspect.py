import json

from click.testing import CliRunner

from edgekit.cli import main

EXPECTED_INSPECT_TINY_PRUNED = """\
tiny-pruned: waveform conv x7 (12/16/20/24/28/32 ch, group norm), 3 layers x 32, heads 0-2, ffn 0-40
source: preset tiny-pruned
parameters: 24,112 (24,112 without training heads)
MACs for 0.5 s: 3,104,160; output 24 frames x 32 at 50 Hz
┏━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━┓
┃ block            ┃ kind       ┃ frames ┃ params ┃      MACs ┃ share ┃
┡━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━┩
│ frontend.conv0   │ conv       │   1599 │    288 │   383,760 │ 12.4% │
│ frontend.conv1   │ conv       │    799 │  1,440 │ 1,150,560 │ 37.1% │
│ frontend.conv2   │ conv       │    399 │  1,680 │   670,320 │ 21.6% │
│ frontend.conv3   │ conv       │    199 │  1,344 │   267,456 │  8.6% │
│ frontend.conv4   │ conv       │     99 │  1,536 │   152,064 │  4.9% │
│ frontend.conv5   │ conv       │     49 │    768 │    37,632 │  1.2% │
│ frontend.conv6   │ conv       │     24 │    768 │    18,432 │  0.6% │
│ projection       │ projection │     24 │  1,120 │    24,576 │  0.8% │
│ pos_conv         │ pos_conv   │     24 │  4,208 │    98,304 │  3.2% │
│ layer0.attention │ attention  │     24 │  2,192 │    67,584 │  2.2% │
│ layer0.ffn       │ ffn        │     24 │  2,696 │    61,440 │  2.0% │
│ layer1.attention │ attention  │     24 │     64 │         0 │  0.0% │
│ layer1.ffn       │ ffn        │     24 │  1,656 │    36,864 │  1.2% │
│ layer2.attention │ attention  │     24 │  4,288 │   135,168 │  4.4% │
│ layer2.ffn       │ ffn        │     24 │     64 │         0 │  0.0% │
└──────────────────┴────────────┴────────┴────────┴───────────┴───────┘
"""


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_inspect_tiny_preset_exact_output():
    result = run("inspect", "tiny-pruned", "--seconds", "0.5")
    assert result.exit_code == 0, result.output
    assert result.output == EXPECTED_INSPECT_TINY_PRUNED


def test_inspect_json_agrees_with_the_spec():
    result = run("inspect", "tiny-hubert", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["params"] == 39216
    assert data["frames"] == 49
    assert sum(b["macs"] for b in data["blocks"]) == data["macs"]
    assert data["arch"]["schema"] == "edgekit.arch/1"


def test_models_lists_published_presets_with_counts():
    result = run("models", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["hubert-base"]["params"] == 94_371_712
    assert rows["distilhubert"]["params"] == 23_491_200
    assert not any(r["tiny"] for r in rows.values())
    table = run("models")
    assert table.exit_code == 0
    assert "hubert-base" in table.output and "94.37M" in table.output


def test_unknown_preset_exits_2_and_suggests():
    result = run("inspect", "hubert-bas")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: unknown preset 'hubert-bas'; did you mean hubert-base, lighthubert-base, distilhubert-heads? "
        "(`edgekit models` lists them)")


def test_foreign_file_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("this is not a checkpoint")
    result = run("inspect", str(bad))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "Traceback" not in result.output


def test_bad_arch_json_is_one_line(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"embed_dim": 32}))
    result = run("inspect", str(path))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
