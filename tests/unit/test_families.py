"""Every family served (``runtime.families``) answers as the 4.57.6 pipeline does, on a random-weight
checkpoint of its own architecture with a tokenizer of its kind (``testkit.checkpoints``): the exported graph on
ONNX Runtime between the tokenizer step's windows and the decoder's spans — the served path without Triton
(tests/integration/test_families.py serves one over gRPC). What differs by family is read from its files: the
pair layout from its tokenizer, the model's inputs from its ``model_input_names``; a family not served is refused
at export naming the ones that are."""

import numpy as np
import pytest

from preprocessing import AnswerOptions, decode
from runtime.families import FAMILIES
from runtime.onnx_runner import OnnxQARunner
from runtime.tensors import pack_tokens
from serving.export import ExportError, copy_repository, export, read_record
from testkit.cases import CASES
from testkit.inputs import squad_sized_pairs
from tests.conftest import ROOT, as_list, assert_same_answers, family_checkpoint, qa_tokenizer

OPTIONS = [
    {},
    {"top_k": 3},
    {"top_k": 5, "handle_impossible_answer": True},
    {"top_k": 2, "align_to_words": False},
    {"top_k": 4, "max_answer_len": 3},
]
# the families the tiny_checkpoint tests do not already cover
OTHER_FAMILIES = [f for f in FAMILIES if f != "electra"]


@pytest.fixture(scope="module", params=OTHER_FAMILIES)
def family(request, tmp_path_factory):
    """(family, checkpoint, repository exported from it)."""
    work = tmp_path_factory.mktemp(request.param)
    checkpoint = family_checkpoint(work / "checkpoint", request.param)
    repository = copy_repository(ROOT / "model_repository", work / "model_repository")
    export(str(checkpoint), repository, engine="onnxruntime")
    return request.param, checkpoint, repository


@pytest.fixture(scope="module")
def served(family):
    """answer(questions, contexts, **options): the served path minus Triton, and the pipeline on the same files."""
    from transformers import pipeline

    _, checkpoint, repository = family
    tokenizer = qa_tokenizer(repository / "tokenizer" / "1" / "tokenizer.json")
    runner = OnnxQARunner(repository / "encoder" / "1" / "model.onnx", device="cpu", max_windows_per_run=8)

    def answer(questions, contexts, **options):
        w = tokenizer.encode(questions, contexts)
        (logits,), _ = runner.run([pack_tokens(w.input_ids, w.attention_mask, w.token_type_ids)])
        decoded = decode(
            logits[..., 0],
            logits[..., 1],
            w.token_offsets,
            w.word_offsets,
            w.window_question,
            contexts,
            AnswerOptions(**options),
        )
        return [
            [
                (decoded.text[q, j], float(decoded.score[q, j]), int(decoded.start[q, j]), int(decoded.end[q, j]))
                for j in range(decoded.text.shape[1])
                if decoded.start[q, j] >= 0
            ]
            for q in range(len(questions))
        ]

    reference = pipeline("question-answering", model=str(checkpoint), tokenizer=str(checkpoint), device=-1)
    return answer, reference


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_every_case_answers_as_the_pipeline(served, options):
    """The edge cases: the card's, SQuAD's, accented, CJK, emoji, odd whitespace, a long document (doc stride)."""
    answer, reference = served
    questions, contexts = (list(t) for t in zip(*CASES.values()))
    for got, question, context in zip(answer(questions, contexts, **options), questions, contexts):
        assert_same_answers(got, as_list(reference(question=question, context=context, **options)))


def test_squad_sized_pairs_answer_as_the_pipeline(served):
    answer, reference = served
    pairs = squad_sized_pairs(24)
    questions, contexts = (list(t) for t in zip(*pairs))
    for got, (question, context) in zip(answer(questions, contexts, top_k=2), pairs):
        assert_same_answers(got, as_list(reference(question=question, context=context, top_k=2)))


def test_the_export_records_what_the_steps_read_from_the_family(family):
    name, _, repository = family
    record = read_record(repository)
    assert record.family == name
    # token types reach BERT and ALBERT; DeBERTa-v3 is given them (model_input_names) but has none to embed
    assert ("token_type_ids" in record.model_inputs) == (name in ("bert", "albert"))
    assert (record.model_limits["type_vocab_size"] is not None) == (name in ("bert", "albert"))
    assert record.model_limits["max_position_embeddings"] == 512
    # every embedded engine runs every family: the torch engine's encoders are ELECTRA's (and its kin's, ALBERT's)
    # and DeBERTa's
    assert record.engines == ["onnxruntime", "openvino", "torch"] and record.unrunnable == {}
    import onnx

    graph = onnx.load(str(repository / "encoder" / "1" / "model.onnx")).graph
    assert [i.name for i in graph.input] == record.model_inputs


def test_every_familys_graph_is_free_of_control_flow(family):
    """The tracer records the branches the encoder takes, also through a family's TorchScript helpers (DeBERTa's
    relative positions), so that every engine compiles the graph; the export checks it against PyTorch."""
    import onnx

    _, _, repository = family
    graph = onnx.load(str(repository / "encoder" / "1" / "model.onnx")).graph
    assert not {node.op_type for node in graph.node} & {"If", "Loop", "Scan"}


def test_a_family_not_served_is_refused_at_export_naming_the_ones_that_are(tmp_path):
    import transformers

    config = transformers.XLNetConfig(vocab_size=100, d_model=16, n_layer=1, n_head=2, d_inner=32)
    checkpoint = tmp_path / "xlnet"
    transformers.XLNetForQuestionAnsweringSimple(config).save_pretrained(checkpoint)
    build = family_checkpoint(tmp_path / "bert", "bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (checkpoint / name).write_bytes((build / name).read_bytes())
    with pytest.raises(
        ExportError,
        match="is a xlnet checkpoint; the families served are " + ", ".join(FAMILIES),
    ):
        export(str(checkpoint), tmp_path / "repository")


def test_windows_follow_each_familys_pair_layout(family):
    """RoBERTa: ``<s> q </s></s> c </s>``, no token types; BERT and DistilBERT: ``[CLS] q [SEP] c [SEP]``; the
    windows hold the same ids as the tokenizer's own pair encoding."""
    from tokenizers import Tokenizer

    _, _, repository = family
    path = repository / "tokenizer" / "1" / "tokenizer.json"
    question, context = CASES["squad"]
    w = qa_tokenizer(path).encode([question], [context])
    expected = Tokenizer.from_file(str(path)).encode(question, context)
    assert w.input_ids[0].tolist() == expected.ids
    assert w.token_type_ids[0].tolist() == expected.type_ids
    assert np.all(w.attention_mask == 1)


def test_a_tokenizer_the_pipeline_windows_otherwise_is_refused_saying_what_to_set(tmp_path, tiny_checkpoint):
    import json
    import shutil

    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "short")
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 256}))
    repository = copy_repository(ROOT / "model_repository", tmp_path / "repository")
    with pytest.raises(ExportError, match="at max_seq_len 256, doc_stride 128; the tokenizer config says 384, 128"):
        export(str(checkpoint), repository)


@pytest.fixture(scope="module")
def graph_logits(family):
    """The edge cases' windows as the tokenizer step packs them, which of their positions are real tokens, and
    the served graph's logits of them on ONNX Runtime: what every other engine is held to."""
    _, _, repository = family
    questions, contexts = (list(t) for t in zip(*CASES.values()))
    w = qa_tokenizer(repository / "tokenizer" / "1" / "tokenizer.json").encode(questions, contexts)
    tokens = pack_tokens(w.input_ids, w.attention_mask, w.token_type_ids)
    (expected,), _ = OnnxQARunner(repository / "encoder" / "1" / "model.onnx", device="cpu").run([tokens])
    return tokens, w.attention_mask == 1, expected


def test_the_openvino_engine_runs_every_familys_graph_as_onnx_runtime_does(family, graph_logits):
    """The other CPU engine on the same exported graph: fp32 logits equal ONNX Runtime's (bf16 is the precision
    it serves in: tests/integration/test_bf16.py)."""
    pytest.importorskip("openvino")
    from runtime.openvino_runner import OpenVinoQARunner

    _, _, repository = family
    tokens, real, expected = graph_logits
    (got,), _ = OpenVinoQARunner(repository / "encoder" / "1" / "model.onnx", precision="fp32").run([tokens])
    np.testing.assert_allclose(got[real], expected[real], atol=1e-4, rtol=1e-4)


def test_the_torch_engine_gives_the_onnx_graphs_logits_for_every_family(family, graph_logits):
    """Every family on the torch engine's own encoders (the GPU path, here on the CPU in fp32): the exported
    graph's logits, so the pipeline's answers."""
    from runtime.torch_runner import TorchQARunner

    _, _, repository = family
    tokens, real, expected = graph_logits
    runner = TorchQARunner(repository / "encoder" / "1" / "checkpoint", device="cpu", length_bucket=32)
    (got,), _ = runner.run([tokens])
    np.testing.assert_allclose(got[real], expected[real], atol=1e-4, rtol=1e-4)


def test_every_familys_graph_is_fp16_safe(family):
    """No float constant outside fp16's finite range (the masks transformers builds from float32's lowest are
    brought to -65504 at export), so an engine that lowers the graph to fp16 gives no NaN."""
    from serving.export import fp16_unsafe_constants

    _, _, repository = family
    assert fp16_unsafe_constants(repository / "encoder" / "1" / "model.onnx") == []


def test_make_bench_times_bare_openvino_on_every_familys_graph(family):
    """``make bench --family``'s in-process competitor feeds each family's graph its own inputs."""
    pytest.importorskip("openvino")
    from perf.bench import bench_bare_openvino
    from runtime.openvino_runner import bf16_units

    if not bf16_units():
        pytest.skip("bare OpenVINO is timed in bf16, on CPUs with bf16 matrix units")
    _, _, repository = family
    timed = bench_bare_openvino(repository, squad_sized_pairs(2), duration_s=0.05)
    assert timed["throughput_qps"] > 0
