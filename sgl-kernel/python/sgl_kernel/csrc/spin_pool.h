// A small spin-then-sleep thread pool for the GEMMs of a decode step (small_gemm_cpu.cpp,
// packed_gemm_cpu.cpp share one: one set of workers per process).
//
// Why: at decode a step is ~120 matrix products of a few rows each. Through ATen each is an
// OpenMP region, and with OMP_WAIT_POLICY=PASSIVE (which the engine needs on shared
// machines) the second thread sleeps between regions: every product pays a futex wake-up,
// ~0.1 ms in a VM, 10 ms of a 40 ms batch-1 step (docs/performance.md). This pool's workers
// spin for a bounded time after a job (SGLANG_CPU_SPIN_US, default 1000 us), so they stay
// awake across the products of one step and sleep between steps. Work is claimed block by
// block from one atomic word, so a worker that is descheduled (another process on the
// cores) or absent (after a fork) only means the caller does more blocks itself: nothing
// ever waits for a sleeping thread. When the cores stay contended the jobs go to torch's
// OpenMP threads for a while (run()).
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <pthread.h>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sgl_cpu {

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

  // the threads a job runs on: the workers and the caller
  int64_t threads() const { return static_cast<int64_t>(threads_.size()) + 1; }

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


inline std::atomic<SpinPool*> g_pool{nullptr};
inline std::mutex g_pool_mu;

// The process's pool, started on first use (no lock once it exists: the GEMMs ask per call).
inline SpinPool& pool() {
  if (SpinPool* p = g_pool.load(std::memory_order_acquire)) return *p;
  std::lock_guard<std::mutex> lk(g_pool_mu);
  if (g_pool.load(std::memory_order_relaxed) == nullptr) {
    // workers: one fewer than torch's intra-op threads (the caller is the other one)
    const char* v = std::getenv("SGLANG_CPU_SPIN_US");
    const long spin = v ? std::max(0L, std::atol(v)) : 1000L;
    const char* pf = std::getenv("SGLANG_CPU_PREFETCH");  // 0 (or off, false): no prefetch hints
    const bool no_pf = pf && (std::string(pf) == "0" || std::string(pf) == "off" || std::string(pf) == "false");
    const int64_t max_prefetch = no_pf ? 0 : int64_t(32) << 20;
    // a forked child has none of the parent's threads (and maybe a mutex held by one):
    // it starts a pool of its own on first use
    static const bool registered = [] {
      return pthread_atfork(nullptr, nullptr, [] {
        g_pool.store(nullptr, std::memory_order_relaxed);
        new (&g_pool_mu) std::mutex();
      }) == 0;
    }();
    (void)registered;
    // never destroyed: worker threads end with the process
    g_pool.store(new SpinPool(std::max(0, at::get_num_threads() - 1), spin, max_prefetch), std::memory_order_release);
  }
  return *g_pool.load(std::memory_order_relaxed);
}

// The caller is about to run work on torch's OpenMP threads: spinning workers go to sleep.
inline void park() {
  if (SpinPool* p = g_pool.load(std::memory_order_acquire)) p->park();  // (no pool yet: nothing spins)
}

}  // namespace sgl_cpu
