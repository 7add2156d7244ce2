// Attention-sink terms of captured query rows on CPU (float32): sgl_kernel.sinks.sink_terms
// (the torch reference, sinks.py, defines every quantity; this is the same math in one call).
//
// Why: the torch version is ~25 small ops per call, ~0.3 ms on CPU whatever the size, and
// capture calls it once per captured layer and head group each step (per-head raw capture of
// 4 layers x 9 heads: 36 calls, 11 ms a step). Here each (row, head) reads only its sink keys
// (typically a handful) once.
#include <torch/extension.h>

#include "cpu_kernels.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int kBins = 16;

inline int distance_bin(int64_t d) { return d < 2 ? 0 : std::min(kBins - 1, 63 - __builtin_clzll(static_cast<uint64_t>(d))); }

const int64_t* opt_i64(const c10::optional<torch::Tensor>& t, torch::Tensor& keep, int64_t n, const char* name) {
  if (!t.has_value() || !t->defined()) return nullptr;
  keep = t->to(torch::kInt64).contiguous();
  TORCH_CHECK(keep.numel() == n, name, " must have one entry per row");
  return keep.data_ptr<int64_t>();
}

}  // namespace

std::vector<torch::Tensor> sink_terms(torch::Tensor q, torch::Tensor k_buffer, torch::Tensor req_to_token,
                                      torch::Tensor row_req, torch::Tensor row_pos, double scale,
                                      torch::Tensor head_lse, torch::Tensor n_sink,
                                      c10::optional<torch::Tensor> head_ids, c10::optional<torch::Tensor> window,
                                      c10::optional<torch::Tensor> mask_prefix, double logit_softcap,
                                      int64_t max_sink) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == torch::kFloat32 && q.device().is_cpu(), "q must be float32 [N, Hq, D] on CPU");
  TORCH_CHECK(k_buffer.dim() == 3 && k_buffer.scalar_type() == torch::kFloat32 && k_buffer.is_contiguous(),
              "k_buffer must be contiguous float32 [slots, Hkv, D]");
  TORCH_CHECK(req_to_token.dim() == 2 && req_to_token.stride(1) == 1, "req_to_token must be [R, max_ctx]");
  const int64_t N = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k_buffer.size(1), C = req_to_token.size(1);
  TORCH_CHECK(k_buffer.size(2) == D && Hq % Hkv == 0, "head shapes do not match");
  TORCH_CHECK(head_lse.dim() == 2 && head_lse.size(0) == N, "head_lse must be [N, H_sel]");
  const int64_t H = head_lse.size(1);
  auto qc = q.contiguous();
  auto lse = head_lse.to(torch::kFloat32).contiguous();
  auto req = row_req.to(torch::kInt64).contiguous(), pos_t = row_pos.to(torch::kInt64).contiguous();
  auto ns = n_sink.to(torch::kInt64).contiguous();
  TORCH_CHECK(req.numel() == N && pos_t.numel() == N && ns.numel() == N, "row_req, row_pos and n_sink must be [N]");
  torch::Tensor heads_keep, win_keep, mp_keep;
  std::vector<int64_t> heads(static_cast<size_t>(H));
  if (head_ids.has_value() && head_ids->defined()) {
    heads_keep = head_ids->to(torch::kInt64).contiguous();
    TORCH_CHECK(heads_keep.numel() == H, "head_ids must have H_sel entries");
    std::copy_n(heads_keep.data_ptr<int64_t>(), H, heads.begin());
  } else {
    TORCH_CHECK(H == Hq, "without head_ids, head_lse must cover every head");
    for (int64_t h = 0; h < H; ++h) heads[static_cast<size_t>(h)] = h;
  }
  for (int64_t h : heads) TORCH_CHECK(h >= 0 && h < Hq, "head_ids must index q's heads");
  const int64_t* win = opt_i64(window, win_keep, N, "window");
  const int64_t* mp = opt_i64(mask_prefix, mp_keep, N, "mask_prefix");
  const int64_t *rq = req.data_ptr<int64_t>(), *rp = pos_t.data_ptr<int64_t>(), *nsk = ns.data_ptr<int64_t>();
  int64_t s_max = max_sink;
  if (s_max < 0) {  // unbounded: the largest n_sink
    s_max = 0;
    for (int64_t i = 0; i < N; ++i) s_max = std::max(s_max, nsk[i]);
  }
  s_max = std::min(s_max, C);
  auto f32 = q.options().dtype(torch::kFloat32);
  auto mass = torch::zeros({N, H}, f32), all_mass = torch::zeros({N, H}, f32), all_plogp = torch::zeros({N, H}, f32);
  auto bins = torch::zeros({N, kBins}, f32);
  auto count = torch::zeros({N}, f32.dtype(torch::kInt64));
  if (s_max <= 0 || N == 0) return {mass, bins, all_mass, all_plogp, count};
  for (int64_t i = 0; i < N; ++i) TORCH_CHECK(rq[i] >= 0 && rq[i] < req_to_token.size(0), "row_req must index req_to_token");
  const int64_t G = Hq / Hkv, slots = k_buffer.size(0);
  const float* qp = qc.data_ptr<float>();
  const float* kp = k_buffer.data_ptr<float>();
  const float* lp = lse.data_ptr<float>();
  float *mo = mass.data_ptr<float>(), *ao = all_mass.data_ptr<float>(), *po = all_plogp.data_ptr<float>();
  float* bo = bins.data_ptr<float>();
  int64_t* co = count.data_ptr<int64_t>();
  const float sc = static_cast<float>(scale), cap = static_cast<float>(logit_softcap);
  const bool i32 = req_to_token.scalar_type() == torch::kInt32;
  TORCH_CHECK(i32 || req_to_token.scalar_type() == torch::kInt64, "req_to_token must be int32 or int64");
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = rp[i];
    int64_t n_in = 0;
    for (int64_t j = 0; j < s_max; ++j) {
      // the keys this row attends to among its sinks: j < n_sink, j <= t, inside the window
      bool inside = j < nsk[i] && j <= t;
      if (win != nullptr) inside = inside && (win[i] <= 0 || j > t - win[i]);
      if (!inside) continue;  // outside keys are never read (their slots may be unwritten)
      ++n_in;
      const int64_t slot = i32 ? req_to_token.data_ptr<int32_t>()[rq[i] * req_to_token.stride(0) + j]
                               : req_to_token.data_ptr<int64_t>()[rq[i] * req_to_token.stride(0) + j];
      TORCH_CHECK(slot >= 0 && slot < slots, "req_to_token holds a slot outside the KV buffer");
      const bool open = mp == nullptr || j >= mp[i];
      float open_sum = 0.f;
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t head = heads[static_cast<size_t>(hh)];
        const float* qr = qp + (i * Hq + head) * D;
        const float* kr = kp + (slot * Hkv + head / G) * D;
        float s = 0.f;
        for (int64_t d = 0; d < D; ++d) s += kr[d] * qr[d];
        s *= sc;
        if (cap > 0.f) s = cap * std::tanh(s / cap);
        const float l = lp[i * H + hh];
        const float p = std::exp(s - l);
        ao[i * H + hh] += p;
        po[i * H + hh] += p * (l - s);  // -p log p >= 0
        if (open) {
          mo[i * H + hh] += p;
          open_sum += p;
        }
      }
      if (open) bo[i * kBins + distance_bin(std::max<int64_t>(t - j, 0))] += open_sum / static_cast<float>(H);
    }
    co[i] = n_in;
  }
  return {mass, bins, all_mass, all_plogp, count};
}
