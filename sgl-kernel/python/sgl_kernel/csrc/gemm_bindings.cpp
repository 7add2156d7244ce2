// Python bindings of the small-GEMM extension: two kernels sharing one spin pool.
#include <torch/extension.h>

#include "gemm_cpu.h"
#include "spin_pool.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("small_linear", &small_linear, "x W^T (+ b) for 1..64 float32 rows on a spin-then-sleep pool",
        py::arg("x"), py::arg("weight"), py::arg("bias") = py::none());
  m.def("pack_panels", &pack_panels, "a float32 weight [N, K] -> panels [ceil(N / 48), K, 48] for packed_linear",
        py::arg("weight"));
  m.def("packed_linear", &packed_linear, "x W^T (+ b) with W packed by pack_panels, on the spin pool",
        py::arg("x"), py::arg("panels"), py::arg("n"), py::arg("bias") = py::none());
  m.def("park", &sgl_cpu::park, "workers stop spinning now (before work on torch's OpenMP threads)");
  m.attr("SMALL_MAX_ROWS") = kSmallGemmMaxRows;
  m.attr("PANEL_COLS") = kPanelCols;
}
