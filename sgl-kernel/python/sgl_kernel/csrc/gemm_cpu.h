// The float32 CPU GEMMs of sgl_kernel's "small GEMM" extension (bound in gemm_bindings.cpp).
#pragma once

#include <torch/extension.h>

#include <cstdint>

// small_gemm_cpu.cpp: x [M <= 64, K] times a row-major weight [N, K]
constexpr int64_t kSmallGemmMaxRows = 64;
torch::Tensor small_linear(torch::Tensor x, torch::Tensor weight, c10::optional<torch::Tensor> bias);

// packed_gemm_cpu.cpp: the weight packed once into K-major panels of kPanelCols columns
constexpr int64_t kPanelCols = 48;
torch::Tensor pack_panels(torch::Tensor weight);
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor panels, int64_t n, c10::optional<torch::Tensor> bias);
