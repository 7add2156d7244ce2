// Python bindings of sgl_kernel's CPU kernels extension: the GEMMs and the paged attention,
// which share one spin pool (spin_pool.h).
#include <torch/extension.h>

#include "cpu_kernels.h"
#include "spin_pool.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("small_linear", &small_linear, "x W^T (+ b) for 1..64 float32 rows on a spin-then-sleep pool",
        py::arg("x"), py::arg("weight"), py::arg("bias") = py::none());
  m.def("pack_panels", &pack_panels, "a float32 weight [N, K] -> panels [ceil(N / 48), K, 48] for packed_linear",
        py::arg("weight"));
  m.def("packed_linear", &packed_linear, "x W^T (+ b) with W packed by pack_panels, on the spin pool",
        py::arg("x"), py::arg("panels"), py::arg("n"), py::arg("bias") = py::none());
  m.def("decode_attention", &decode_attention, "paged decode attention on CPU (float32)",
        py::arg("q"), py::arg("k_buffer"), py::arg("v_buffer"), py::arg("req_to_token"), py::arg("req_rows"),
        py::arg("seq_lens"), py::arg("scale"), py::arg("mask_prefix") = py::none(), py::arg("k_new") = py::none(),
        py::arg("v_new") = py::none(), py::arg("loc") = py::none());
  m.def("extend_attention", &extend_attention, "paged causal prefill attention on CPU (float32)",
        py::arg("q"), py::arg("k_buffer"), py::arg("v_buffer"), py::arg("req_to_token"), py::arg("req_rows"),
        py::arg("prefix_lens"), py::arg("extend_lens"), py::arg("scale"));
  m.def("sink_terms", &sink_terms, "attention-sink terms of captured rows on CPU (float32)",
        py::arg("q"), py::arg("k_buffer"), py::arg("req_to_token"), py::arg("row_req"), py::arg("row_pos"),
        py::arg("scale"), py::arg("head_lse"), py::arg("n_sink"), py::arg("head_ids") = py::none(),
        py::arg("window") = py::none(), py::arg("mask_prefix") = py::none(), py::arg("logit_softcap") = 0.0,
        py::arg("max_sink") = -1);
  m.def("park", &sgl_cpu::park, "workers stop spinning now (before work on torch's OpenMP threads)");
  m.attr("SMALL_MAX_ROWS") = kSmallGemmMaxRows;
  m.attr("PANEL_COLS") = kPanelCols;
}
