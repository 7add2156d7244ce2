// y = x W^T (+ b) for a few rows of x (up to 64; the engine sends decode batches of 1..16), float32,
// on a small spin-then-sleep thread pool.
//
// Why: at batch 1 a decode step is ~120 GEMVs that read the weights once, so its floor is
// weight bytes / memory bandwidth. Through ATen each GEMV is an OpenMP region, and with
// OMP_WAIT_POLICY=PASSIVE (which the engine needs on shared machines) the second thread
// sleeps between regions: every GEMV pays a futex wake-up, ~0.1 ms in a VM, 10 ms of a
// 40 ms step (docs/performance.md). This pool's workers spin for a bounded time after a
// job (SGLANG_CPU_SPIN_US, default 1000 us), so they stay awake across the GEMVs of one
// step and sleep between steps. Work is claimed block by block from one atomic word, so a
// worker that is descheduled (another process on the cores) or absent (after a fork)
// only means the caller does more blocks itself: nothing ever waits for a sleeping thread.
// When the cores stay contended the jobs go to torch's OpenMP threads for a while (run()).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <pthread.h>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

using Task = void (*)(const void* ctx, int64_t block);

// state word: generation (bits 63..32) | block count (31..16) | next unclaimed block (15..0)
constexpr uint64_t kMaxBlocks = 0xFFFF;
inline uint32_t gen_of(uint64_t s) { return static_cast<uint32_t>(s >> 32); }
inline uint64_t total_of(uint64_t s) { return (s >> 16) & 0xFFFF; }
inline uint64_t next_of(uint64_t s) { return s & 0xFFFF; }

class SpinPool {
 public:
  SpinPool(int workers, int64_t spin_us, int64_t max_prefetch)
      : spin_(std::chrono::microseconds(spin_us)), max_prefetch_(max_prefetch) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { loop(); });
  }

  // Runs task(ctx, b) for b in [0, n_blocks); returns when all are done. ``key`` names
  // the job's input (bytes long, e.g. the weight) for the prefetch hints (hint_next).
  void run(Task task, const void* ctx, int64_t n_blocks, const char* key = nullptr, int64_t bytes = 0) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock() || threads_.empty() || n_blocks < 2) {  // e.g. another caller holds the pool
      for (int64_t b = 0; b < n_blocks; ++b) task(ctx, b);
      return;
    }
    if (contended_ > 0) {  // (below) torch's OpenMP threads, which sleep between jobs
      --contended_;
      at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) task(ctx, b);
      });
      return;
    }
    TORCH_CHECK(static_cast<uint64_t>(n_blocks) <= kMaxBlocks, "too many blocks");
    task_ = task;
    ctx_ = ctx;
    done_.store(0, std::memory_order_relaxed);
    ++gen_;
    // publishes task_ and ctx_ to whoever claims a block of this generation
    state_.store((static_cast<uint64_t>(gen_) << 32) | (static_cast<uint64_t>(n_blocks) << 16),
                 std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(m_);
      cv_.notify_all();
    }
    drain(gen_);
    hint_next(key, bytes);
    if (done_.load(std::memory_order_acquire) == n_blocks) return;
    const auto t0 = std::chrono::steady_clock::now();
    for (uint32_t i = 1; done_.load(std::memory_order_acquire) < n_blocks; ++i) {
      cpu_relax();
      if ((i & 255) == 0) std::this_thread::yield();  // a claimed block's worker was descheduled
    }
    // A block takes ~10-20 us: waiting longer means a worker lost its core to another
    // process. When that keeps happening, the spinning worker is the wrong tool (it is
    // always runnable, so the kernel's scheduler ranks it behind the other process, and a
    // descheduled worker holds jobs hostage): hand the next jobs to torch's OpenMP threads,
    // then try the pool again.
    late_ += std::chrono::steady_clock::now() - t0 > kLate;
    if (++calls_ == kWindow) {
      if (late_ >= kMaxLate) contended_ = kContendedCalls;
      calls_ = late_ = 0;
    }
  }

  // The caller is about to run work on torch's OpenMP threads (a large GEMM): workers stop
  // spinning now instead of at their deadline, so they do not take cores from that work.
  void park() { park_.fetch_add(1, std::memory_order_relaxed); }

 private:
  // Decode runs the same GEMVs in the same order every step. The pool learns which input
  // follows which and, once it has done its blocks of a job, a worker prefetches the
  // input of the job that comes next while the caller runs the ops in between (attention,
  // norms, Python): those bytes then come from cache. Prefetch instructions never fault,
  // so a hint about freed memory is harmless; a new job interrupts the prefetch.
  void hint_next(const char* key, int64_t bytes) {
    if (key == nullptr) return;
    if (prev_key_ != nullptr) {
      if (next_.size() > 4096) next_.clear();  // not a fixed model's weights: start over
      next_[prev_key_] = {key, bytes};
    }
    prev_key_ = key;
    // (prefetching two or more inputs ahead measured no faster: the gaps are short)
    auto it = next_.find(key);
    if (it == next_.end() || it->second.second > max_prefetch_) return;
    pf_ptr_.store(it->second.first, std::memory_order_relaxed);
    pf_bytes_.store(it->second.second, std::memory_order_relaxed);
    pf_seq_.fetch_add(1, std::memory_order_release);
  }

  // (a hint that changes while it is read only prefetches the wrong bytes)
  void prefetch(uint32_t seen) {
    const char* p = pf_ptr_.load(std::memory_order_relaxed);
    const int64_t n = pf_bytes_.load(std::memory_order_relaxed);
    for (int64_t off = 0; off < n; off += 64) {
      __builtin_prefetch(p + off, 0, 2);
      if ((off & 8191) == 0 && gen_of(state_.load(std::memory_order_relaxed)) != seen) return;
    }
  }

  void drain(uint32_t g) {
    uint64_t s = state_.load(std::memory_order_acquire);
    while (gen_of(s) == g && next_of(s) < total_of(s)) {
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        task_(ctx_, static_cast<int64_t>(next_of(s)));  // claimed: task_/ctx_ stay until done_ counts it
        done_.fetch_add(1, std::memory_order_release);
        s = state_.load(std::memory_order_acquire);
      }
    }
  }

  [[noreturn]] void loop() {
    uint32_t seen = 0;
    uint64_t pf_seen = 0, parked = 0;
    while (true) {
      auto deadline = std::chrono::steady_clock::now() + spin_;
      uint64_t s;
      for (uint32_t i = 1;; ++i) {
        s = state_.load(std::memory_order_acquire);
        if (gen_of(s) != seen) break;
        const uint64_t q = pf_seq_.load(std::memory_order_acquire);
        if (q != pf_seen) {
          pf_seen = q;
          prefetch(seen);
          continue;
        }
        cpu_relax();
        if ((i & 63) != 0) continue;
        std::this_thread::yield();  // cheap when the core is idle; gives it away when it is not
        const uint64_t pk = park_.load(std::memory_order_relaxed);
        if (pk != parked || std::chrono::steady_clock::now() > deadline) {
          parked = pk;
          std::unique_lock<std::mutex> lk(m_);
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          // seq_cst on both sides: either run() sees the sleeper and notifies, or this sees the new gen
          cv_.wait(lk, [&] { return gen_of(state_.load(std::memory_order_seq_cst)) != seen; });
          sleepers_.fetch_sub(1, std::memory_order_seq_cst);
          deadline = std::chrono::steady_clock::now() + spin_;
        }
      }
      seen = gen_of(s);
      parked = park_.load(std::memory_order_relaxed);  // a park() before this job is not for the spin after it
      drain(seen);
    }
  }

  std::chrono::microseconds spin_;
  std::vector<std::thread> threads_;
  std::mutex run_mu_, m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> sleepers_{0};
  // written by the caller holding run_mu_ only
  uint32_t gen_ = 0;
  int calls_ = 0, late_ = 0, contended_ = 0;
  static constexpr auto kLate = std::chrono::microseconds(200);
  static constexpr int kWindow = 128, kMaxLate = 8, kContendedCalls = 4096;
  int64_t max_prefetch_;  // larger inputs (an LM head) are not hinted
  const char* prev_key_ = nullptr;
  std::unordered_map<const char*, std::pair<const char*, int64_t>> next_;
  std::atomic<const char*> pf_ptr_{nullptr};
  std::atomic<int64_t> pf_bytes_{0};
  std::atomic<uint64_t> pf_seq_{0};
  std::atomic<uint64_t> park_{0};
  Task task_ = nullptr;
  const void* ctx_ = nullptr;
};

SpinPool* g_pool = nullptr;
std::mutex g_pool_mu;

SpinPool& pool() {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  if (g_pool == nullptr) {
    // workers: one fewer than torch's intra-op threads (the caller is the other one)
    const char* v = std::getenv("SGLANG_CPU_SPIN_US");
    const long spin = v ? std::max(0L, std::atol(v)) : 1000L;
    const char* pf = std::getenv("SGLANG_CPU_PREFETCH");  // 0: no prefetch hints
    const int64_t max_prefetch = pf && std::string(pf) == "0" ? 0 : int64_t(32) << 20;
    // never destroyed: worker threads end with the process
    g_pool = new SpinPool(std::max(0, at::get_num_threads() - 1), spin, max_prefetch);
    // a forked child has none of the parent's threads (and maybe a mutex held by one):
    // it starts a pool of its own on first use
    static bool registered = [] {
      return pthread_atfork(nullptr, nullptr, [] {
        g_pool = nullptr;
        new (&g_pool_mu) std::mutex();
      }) == 0;
    }();
    (void)registered;
  }
  return *g_pool;
}

typedef float v16 __attribute__((vector_size(64)));

inline v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned vector load
  return v;
}

typedef int32_t v16i __attribute__((vector_size(64)));

inline float hsum(v16 v) {
  float s = 0.f;
  for (int l = 0; l < 16; ++l) s += v[l];
  return s;
}

// The lane sums of a, b, c, d in lanes 0, 4, 8, 12: a tree of shuffles and adds, 12 vector
// ops for four sums instead of 4 x 15 scalar adds (the sums are a third of a short-K tile).
inline v16 hsum4(v16 a, v16 b, v16 c, v16 d) {
  const v16i lo = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
  const v16i hi = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
  const v16 ab = __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi);  // a's 8 | b's 8
  const v16 cd = __builtin_shuffle(c, d, lo) + __builtin_shuffle(c, d, hi);
  const v16i lo4 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
  const v16i hi4 = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
  v16 s = __builtin_shuffle(ab, cd, lo4) + __builtin_shuffle(ab, cd, hi4);  // 4 lanes each of a, b, c, d
  const v16i sw2 = {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
  s += __builtin_shuffle(s, sw2);
  const v16i sw1 = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
  return s + __builtin_shuffle(s, sw1);
}

struct Gemm {
  const float* x;
  int64_t x_stride;
  const float* w;  // [N, K] contiguous
  const float* bias;  // [N] or null
  float* y;  // [M, N] contiguous
  int64_t M, N, K, rows_per_block;
};

// rows [m0, m0 + MT) of x against rows [n0, n0 + R) of W; MT x R accumulators of 16 lanes
// (6 x 4 = 24 of the 32 AVX-512 registers, with 4 for W and 1 for x)
template <int MT, int R>
inline void tile(const Gemm& g, int64_t m0, int64_t n0) {
  v16 acc[MT][R];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = v16{};
  const int64_t K = g.K, K16 = K & ~int64_t(15);
  const float* x0 = g.x + m0 * g.x_stride;
  for (int64_t k = 0; k < K16; k += 16) {
    v16 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load16(g.w + (n0 + r) * K + k);
    for (int m = 0; m < MT; ++m) {
      const v16 xv = load16(x0 + m * g.x_stride + k);
      for (int r = 0; r < R; ++r) acc[m][r] += xv * wv[r];
    }
  }
  for (int m = 0; m < MT; ++m) {
    float sums[R];
    if constexpr (R == 4) {
      const v16 t = hsum4(acc[m][0], acc[m][1], acc[m][2], acc[m][3]);
      for (int r = 0; r < 4; ++r) sums[r] = t[4 * r];
    } else {
      for (int r = 0; r < R; ++r) sums[r] = hsum(acc[m][r]);
    }
    for (int r = 0; r < R; ++r) {
      float s = sums[r];
      for (int64_t k = K16; k < K; ++k) s += x0[m * g.x_stride + k] * g.w[(n0 + r) * K + k];
      if (g.bias) s += g.bias[n0 + r];
      g.y[(m0 + m) * g.N + n0 + r] = s;
    }
  }
}

constexpr int kTileRows = 6;

template <int R>
inline void x_rows(const Gemm& g, int64_t n) {
  // every row of x against R rows of W, which stay in L1 while the x tiles pass (x is in
  // L2). (The other order, an x tile against the block's W rows, measured slower.)
  int64_t m = 0;
  for (; m + kTileRows <= g.M; m += kTileRows) tile<kTileRows, R>(g, m, n);
  switch (g.M - m) {
    case 1: tile<1, R>(g, m, n); break;
    case 2: tile<2, R>(g, m, n); break;
    case 3: tile<3, R>(g, m, n); break;
    case 4: tile<4, R>(g, m, n); break;
    case 5: tile<5, R>(g, m, n); break;
    default: break;
  }
}

void gemm_block(const void* p, int64_t block) {
  const Gemm& g = *static_cast<const Gemm*>(p);
  const int64_t n0 = block * g.rows_per_block, n1 = std::min(g.N, n0 + g.rows_per_block);
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) x_rows<4>(g, n);
  for (; n < n1; ++n) x_rows<1>(g, n);
}

}  // namespace

constexpr int64_t kSmallGemmMaxRows = 64;

// x [M, K] (rows may be strided), weight [N, K], bias [N] or None -> [M, N]; M <= 64
torch::Tensor small_linear(torch::Tensor x, torch::Tensor weight, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.stride(1) == 1,
              "x must be float32 [M, K] with contiguous rows");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32 && weight.is_contiguous(),
              "weight must be contiguous float32 [N, K]");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  TORCH_CHECK(weight.size(1) == K, "x has ", K, " columns, weight ", weight.size(1));
  TORCH_CHECK(M >= 1 && M <= kSmallGemmMaxRows, "small_linear takes 1..", kSmallGemmMaxRows, " rows, got ", M);
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == torch::kFloat32 && bias->is_contiguous() && bias->numel() == N,
                "bias must be contiguous float32 [N]");
    b = bias->data_ptr<float>();
  }
  auto y = torch::empty({M, N}, x.options());
  // blocks of >= 64 weight rows (~150 KB at K=576): enough to share, few enough to claim cheaply
  const int64_t rows = std::max<int64_t>(64, (N + kMaxBlocks - 1) / static_cast<int64_t>(kMaxBlocks));
  Gemm g{x.data_ptr<float>(), x.stride(0), weight.data_ptr<float>(), b, y.data_ptr<float>(), M, N, K, rows};
  pool().run(gemm_block, &g, (N + rows - 1) / rows, reinterpret_cast<const char*>(g.w), N * K * 4);
  return y;
}

void park() {
  if (g_pool != nullptr) g_pool->park();  // (no pool yet: nothing spins)
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("small_linear", &small_linear, "x W^T (+ b) for 1..64 float32 rows on a spin-then-sleep pool",
        py::arg("x"), py::arg("weight"), py::arg("bias") = py::none());
  m.def("park", &park, "workers stop spinning now (before work on torch's OpenMP threads)");
}
