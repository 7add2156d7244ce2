// sgl_kernel's float32 CPU kernels that share the spin pool (spin_pool.h); one extension,
// bound in cpu_kernels_bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <vector>

// The data of an optional float32 bias of n outputs (checked), or null: the GEMMs' shared argument.
inline const float* bias_data(const c10::optional<torch::Tensor>& bias, int64_t n) {
  if (!bias.has_value() || !bias->defined()) return nullptr;
  TORCH_CHECK(bias->scalar_type() == torch::kFloat32 && bias->is_contiguous() && bias->numel() == n,
              "bias must be contiguous float32 [", n, "]");
  return bias->data_ptr<float>();
}

// small_gemm_cpu.cpp: x [M <= 64, K] times a row-major weight [N, K]
constexpr int64_t kSmallGemmMaxRows = 64;
torch::Tensor small_linear(torch::Tensor x, torch::Tensor weight, c10::optional<torch::Tensor> bias);

// packed_gemm_cpu.cpp: the weight packed once into K-major panels of kPanelCols columns
constexpr int64_t kPanelCols = 48;
torch::Tensor pack_panels(torch::Tensor weight);
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor panels, int64_t n, c10::optional<torch::Tensor> bias);

// paged_attention_cpu.cpp: attention over the paged KV cache; decode: one query per request
std::vector<torch::Tensor> decode_attention(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor v_buffer,
                                            torch::Tensor req_to_token, torch::Tensor req_rows,
                                            torch::Tensor seq_lens, double scale,
                                            c10::optional<torch::Tensor> mask_prefix,
                                            c10::optional<torch::Tensor> k_new, c10::optional<torch::Tensor> v_new,
                                            c10::optional<torch::Tensor> loc);
// prefill: each request's extend rows, causal after its cached prefix
std::vector<torch::Tensor> extend_attention(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor v_buffer,
                                            torch::Tensor req_to_token, torch::Tensor req_rows,
                                            torch::Tensor prefix_lens, torch::Tensor extend_lens, double scale);

// sinks_cpu.cpp: the attention-sink terms of captured rows (sgl_kernel.sinks.sink_terms);
// max_sink < 0: the largest n_sink
std::vector<torch::Tensor> sink_terms(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor req_to_token,
                                      torch::Tensor row_req, torch::Tensor row_pos, double scale,
                                      torch::Tensor head_lse, torch::Tensor n_sink,
                                      c10::optional<torch::Tensor> head_ids, c10::optional<torch::Tensor> window,
                                      c10::optional<torch::Tensor> mask_prefix, double logit_softcap,
                                      int64_t max_sink);
