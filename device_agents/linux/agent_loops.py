"""The generation loops (runner side): the only code inside timed phases.

Each loop loads one artifact file into its runtime and ``generate(ids, gen_len, stamp, hook)`` runs a
prefill of the prompt ids and greedy decoding to ``gen_len`` tokens, calling ``stamp(name, k)`` at every
phase boundary (see device_agents/TRACE.md); it returns the generated tokens.
"""

from __future__ import annotations

import contextlib


class OnnxLoop:
    """Prefill + greedy decode through onnxruntime with past/present key-values; buffers reused."""

    kind = "python-onnxruntime"

    def __init__(self, path, threads, max_positions):
        import numpy as np
        import onnxruntime as ort

        self.np = np
        self.version = ort.__version__
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted(n for n in inputs if n.startswith("past_key_values."))
        self.output_names = ["logits"] + [n.replace("past_key_values.", "present.") for n in self.past_names]
        self.has_mask = "attention_mask" in inputs
        self.has_positions = "position_ids" in inputs
        self.empty_past = {n: np.zeros((1, int(inputs[n].shape[1]), 0, int(inputs[n].shape[3])),
                                       dtype=np.float32) for n in self.past_names}
        self.mask = np.ones((1, max_positions), dtype=np.int64)
        self.positions = np.arange(max_positions, dtype=np.int64)[None, :]
        self.one_id = np.zeros((1, 1), dtype=np.int64)

    def generate(self, ids, gen_len, stamp, hook):
        """Prefill ``ids`` then greedy-decode to ``gen_len`` tokens; ``stamp(name, k)`` records an event (see
        TRACE.md). Returns the tokens."""
        np = self.np
        n = len(ids)
        run = self.session.run
        names = self.output_names
        past_names = self.past_names
        feed = dict(self.empty_past)
        feed["input_ids"] = np.asarray([ids], dtype=np.int64)
        if self.has_mask:
            feed["attention_mask"] = self.mask[:, :n]
        if self.has_positions:
            feed["position_ids"] = self.positions[:, :n]
        stamp("prefill_start", None)
        out = run(names, feed)
        stamp("prefill_end", None)
        token = int(out[0][0, -1].argmax())
        tokens = [token]
        pos = n
        one = self.one_id
        feed["input_ids"] = one
        for k in range(1, gen_len):
            if hook is not None:
                hook(k)
            one[0, 0] = token
            for i, name in enumerate(past_names):
                feed[name] = out[i + 1]
            if self.has_mask:
                feed["attention_mask"] = self.mask[:, :pos + 1]
            if self.has_positions:
                feed["position_ids"] = self.positions[:, pos:pos + 1]
            out = run(names, feed)
            stamp("decode_step", k)
            token = int(out[0][0, -1].argmax())
            tokens.append(token)
            pos += 1
        return tokens


class GenAILoop:
    """Prefill + greedy decode through onnxruntime-genai (ORT GenAI's own generator, KV buffer and search).

    ``--model`` is the artifact's model.onnx; GenAI loads the directory around it (genai_config.json). GenAI
    runs the forward pass of appended tokens at once (``append_tokens`` = the prefill) but the forward pass
    of a generated token lazily, inside the next ``generate_next_token``, which then also picks the next
    token; so ``prefill_end`` follows the first pick and each ``decode_step`` brackets one forward pass and
    one pick, as in the other loops. Greedy (``do_sample`` false); ``min_length`` keeps an end-of-sequence
    token from ending the run early. The KV buffer has ``max_positions`` positions (``max_length``): the
    artifact's max_context from ``--max-context``, as an app that ships it allocates it.
    """

    kind = "python-onnxruntime-genai"

    def __init__(self, path, threads, max_positions):
        import json
        import os

        import numpy as np
        import onnxruntime_genai as og

        self.np = np
        self.og = og
        self.version = og.__version__
        config = og.Config(os.path.dirname(os.path.abspath(path)))
        # GenAI has no thread setting of its own: the decoder's ORT session options, the same overlay the
        # native runner's GenAI backend applies (ORT's other defaults, spinning included, as its users
        # get them).
        options = {"intra_op_num_threads": threads}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.model = og.Model(config)
        self.max_positions = max_positions

    def generate(self, ids, gen_len, stamp, hook):
        """Prefill ``ids``, then greedy-decode to ``gen_len`` tokens; returns the tokens."""
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, min_length=len(ids) + gen_len,
                                  max_length=max(self.max_positions, len(ids) + gen_len))
        generator = og.Generator(self.model, params)
        prompt = self.np.asarray(ids, dtype=self.np.int32)
        stamp("prefill_start", None)
        generator.append_tokens(prompt)
        generator.generate_next_token()
        tokens = [int(generator.get_next_tokens()[0])]
        stamp("prefill_end", None)
        next_token, next_tokens = generator.generate_next_token, generator.get_next_tokens
        for k in range(1, gen_len):
            if hook is not None:
                hook(k)
            next_token()
            tokens.append(int(next_tokens()[0]))
            stamp("decode_step", k)
        return tokens


class PteLoop:
    """Prefill + greedy decode through executorch's Python runtime (static KV cache in the program)."""

    kind = "python-executorch"

    def __init__(self, path, threads, max_positions):
        import torch
        from executorch.runtime import Runtime

        self.torch = torch
        try:
            from importlib.metadata import version

            self.version = version("executorch")
        except Exception:
            self.version = None
        with contextlib.suppress(Exception):
            torch.set_num_threads(threads)
        # XNNPACK runs on ExecuTorch's own thread pool (one thread per core by default), not torch's:
        # size it as asked, as the native runner does, or --threads would not hold for delegated work.
        with contextlib.suppress(Exception):
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
        # Kernels edgekit's programs may call beyond the runtime's own: ExecuTorch's LLM ops (KV cache, SDPA)
        # and its quantized embedding ops. A runtime without them fails the load naming the operator.
        for module in ("executorch.extension.llm.custom_ops.custom_ops", "executorch.kernels.quantized"):
            with contextlib.suppress(ImportError):
                __import__(module)
        self.method = Runtime.get().load_program(path).load_method("forward")
        self.positions = [torch.tensor([p], dtype=torch.long) for p in range(max_positions)]
        # A decode step does what the native runner's does: write the token and the position into the
        # input tensors, execute, argmax the logits in place. Through the Python binding's call the step
        # also converts both inputs and clones the output, and between two steps the interpreter runs on
        # caches the step has just flushed: that cost 2-4% of a 10 ms step on a 2-core x86 VM (measured
        # time-sliced against a loop that times execute() alone), this path ~1%. Inputs the program does
        # not plan are bound by reference (ExecuTorch shares their data), so they are set once and then
        # written through numpy views; a planned output stays at its offset in the planned memory, so it
        # is fetched once, uncloned, and read in place. Otherwise, or on another binding, each step goes
        # through the call.
        raw = getattr(self.method, "_method", None)
        self.raw = raw if all(hasattr(raw, name) for name in ("set_inputs", "execute", "get_outputs")) else None
        meta = self.method.metadata
        self.inputs_by_reference = not any(meta.input_tensor_meta(i).is_memory_planned()
                                           for i in range(meta.num_inputs()))
        self.output_in_place = meta.output_tensor_meta(0).is_memory_planned()
        self.one_id = torch.zeros((1, 1), dtype=torch.long)
        self.position = torch.zeros(1, dtype=torch.long)

    def generate(self, ids, gen_len, stamp, hook):
        """Prefill ``ids``, then greedy-decode to ``gen_len`` tokens; returns the tokens."""
        torch = self.torch
        n = len(ids)
        prompt = torch.tensor([ids], dtype=torch.long)
        prompt_positions = torch.arange(n, dtype=torch.long)
        stamp("prefill_start", None)
        (logits,) = self.method.execute([prompt, prompt_positions])
        stamp("prefill_end", None)
        tokens = [int(logits.numpy()[0, -1].argmax())]
        if self.raw is None:
            self._decode_by_call(tokens, n, gen_len, stamp, hook)
        else:
            self._decode_in_place(tokens, n, gen_len, stamp, hook)
        return tokens

    def _decode_by_call(self, tokens, n, gen_len, stamp, hook):
        execute, one, positions = self.method.execute, self.one_id, self.positions
        one_np = one.numpy()
        for k in range(1, gen_len):
            if hook is not None:
                hook(k)
            one_np[0, 0] = tokens[-1]
            (logits,) = execute([one, positions[n + k - 1]])
            stamp("decode_step", k)
            tokens.append(int(logits.numpy()[0, -1].argmax()))

    def _decode_in_place(self, tokens, n, gen_len, stamp, hook):
        raw, inputs = self.raw, [self.one_id, self.position]
        one_np, position_np = self.one_id.numpy(), self.position.numpy()
        set_each_step = not self.inputs_by_reference
        logits_np = None
        raw.set_inputs(inputs)
        for k in range(1, gen_len):
            if hook is not None:
                hook(k)
            one_np[0, 0] = tokens[-1]
            position_np[0] = n + k - 1
            if set_each_step:
                raw.set_inputs(inputs)
            raw.execute()
            stamp("decode_step", k)
            if logits_np is None or not self.output_in_place:
                logits_np = raw.get_outputs(False)[0].numpy()
            tokens.append(int(logits_np[0, -1].argmax()))


