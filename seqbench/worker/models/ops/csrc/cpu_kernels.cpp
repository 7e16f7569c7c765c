// seqbench's fused CPU kernels: Mamba's selective scan, Mamba-2's SSD scan, the short causal
// depthwise convolution and the elementwise linear recurrence (minGRU, minLSTM, LRU), forward and
// backward. Built and loaded by
// seqbench/worker/models/ops/native.py (plain C++17, no torch headers, a C ABI for ctypes).
//
// The scans keep each task's state in cache and write only the state entering every chunk of
// T steps; the backward recomputes a chunk's states from its checkpoint, then runs the adjoint
// recurrence right to left (as mamba-ssm's CUDA kernel recomputes in shared memory). Tasks are
// (batch element, block of channels) for Mamba, (batch element, head) for Mamba-2 and (batch
// element, block of channels) for the convolution; a task's outputs never depend on which
// thread ran it, so results are the same for any thread count. Reductions across tasks
// (gradients of B, C, A, D, the conv weight) are written as per-task partial sums that the
// caller adds up.
//
// Every (B, L, .) operand is addressed as ptr[b * sb + t * sl + i] (innermost stride 1), so
// views such as the halves of an in_proj output are read in place.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define SB_API extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kAbiVersion = 2;

// ---- denormals -------------------------------------------------------------------------------
// Decays multiplied over many steps drive states and adjoints below 1.2e-38, where x86 computes
// denormals up to ~100x slower (seen: a 70 ms backward took 1.3 s in training). Each thread
// flushes them to zero while it runs a kernel (values < 1.2e-38 in fp32, < 2.2e-308 in fp64,
// far below anything the outputs resolve) and restores its own mode afterwards.
class FlushDenormals {
 public:
  FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040);  // FTZ | DAZ
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    saved_ = fpcr;
    fpcr |= (uint64_t(1) << 24);  // FZ
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
#endif
  }
  ~FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(saved_);
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  uint64_t saved_ = 0;
};

// ---- threads ---------------------------------------------------------------------------------
// A pool is made per call and joined before returning: nothing outlives the call, so the library
// is safe in processes forked from a parent that used it. Tasks are taken from a shared counter,
// which keeps both cores busy when one of them is slowed by another process.
template <class F>
void parallel_for(int64_t ntasks, int64_t nthreads, const F& fn) {
  nthreads = std::max<int64_t>(1, std::min(nthreads, ntasks));
  if (nthreads == 1) {
    FlushDenormals ftz;
    for (int64_t i = 0; i < ntasks; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    FlushDenormals ftz;
    for (int64_t i = next.fetch_add(1); i < ntasks; i = next.fetch_add(1)) fn(i);
  };
  std::vector<std::thread> pool;
  pool.reserve(nthreads - 1);
  for (int64_t w = 1; w < nthreads; ++w) {
    try {
      pool.emplace_back(work);
    } catch (...) {  // no more threads available: the ones we have (and this one) finish it
      break;
    }
  }
  work();
  for (auto& th : pool) th.join();
}

// Threads worth starting for `work` multiply-adds: a thread costs ~20-50 us to start.
int64_t useful_threads(int64_t nthreads, double work) {
  return std::max<int64_t>(1, std::min<int64_t>(nthreads, static_cast<int64_t>(work / 2e5)));
}

// Per-thread scratch memory, reused by every task a thread runs (and, on the calling thread,
// across calls): a backward's chunk buffers are up to ~1 MB, and allocating them per task
// costs page faults and zeroing that were measured at 10x the forward's time for small tasks.
// The contents are undefined: callers initialise what they read.
template <class S>
S* scratch(size_t n) {
  thread_local std::vector<S> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Array sizes in scratch, padded so that consecutive arrays (and rows of a chunk buffer) start
// one 64-byte line apart modulo 4 KiB: a store to one array and a load from another at the same
// 4 KiB offset stall the load ("4K aliasing"), measured at 1.6x on a (64, 64) state.
inline size_t padded(size_t n) { return (n + 15) / 16 * 16 + 16; }

template <class S>
struct Carve {
  S* p;
  S* take(size_t n) {
    S* r = p;
    p += padded(n);
    return r;
  }
};

// ---- exp ---------------------------------------------------------------------------------------
// A vectorisable expf: Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, and Cephes' degree-6
// polynomial for e^r (max relative error ~1.2e-7 on [-87, 88]). Below -87.3 it returns 0 (where
// expf is denormal, < 1.2e-38), above 88 +inf; NaN stays NaN.
inline float exp_approx(float x) {
  const float lo = -87.3365447504f, hi = 88.0f;
  float xc = std::min(std::max(x, lo), hi);
  // round to nearest by adding 1.5 * 2^23 (floorf would not vectorise without
  // -fno-trapping-math); the low bits of the sum are then the integer k
  const float shifter = 12582912.0f;
  const float kf = xc * 1.44269504088896341f + shifter;
  const int32_t ki = __builtin_bit_cast(int32_t, kf) - 0x4B400000;
  const float k = kf - shifter;
  float r = xc - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float e = p * (r * r) + r + 1.0f;
  const float scale = __builtin_bit_cast(float, (ki + 127) << 23);  // 2^k
  float res = e * scale;
  res = x < lo ? 0.0f : res;
  res = x > hi ? std::numeric_limits<float>::infinity() : res;
  return x != x ? x : res;
}

inline float ex(float x) { return exp_approx(x); }
inline double ex(double x) { return std::exp(x); }  // fp64 serves references and gradcheck

template <class S>
inline S sigmoid(S x) {
  return S(1) / (S(1) + ex(-x));
}

template <class S>
inline const S* row(const void* p, int64_t sb, int64_t sl, int64_t b, int64_t t) {
  return static_cast<const S*>(p) + b * sb + t * sl;
}

template <class S>
inline S* mrow(void* p, int64_t sb, int64_t sl, int64_t b, int64_t t) {
  return static_cast<S*>(p) + b * sb + t * sl;
}

// ---- lane blocks and their sums ------------------------------------------------------------------
// The vector loops run over blocks of kW lanes whose accumulators stay in registers. A
// reduction over the vectorised dimension (the gradients of B and C) leaves one kW-lane
// partial-sum vector per state; hsum_tile adds up 16 such vectors at once.
constexpr int64_t kW = 16;

inline int64_t pad16(int64_t n) { return (n + 15) / 16 * 16; }

// out[i] = sum_l tile[i * 16 + l] for i < 16
template <class S>
inline void hsum_tile(const S* tile, S* out) {
  for (int i = 0; i < 16; ++i) {
    S s = S(0);
    for (int l = 0; l < 16; ++l) s += tile[i * 16 + l];
    out[i] = s;
  }
}

#if defined(__AVX512F__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive in the intrinsics
// The same as a transpose-and-add tree: 45 instructions for 16 sums instead of ~8 per sum.
template <>
inline void hsum_tile<float>(const float* tile, float* out) {
  __m512 a[8], b[4], c[2];
  for (int k = 0; k < 8; ++k) {  // 32-bit interleave: partials of v[2k], v[2k+1]
    __m512 v0 = _mm512_loadu_ps(tile + (2 * k) * 16), v1 = _mm512_loadu_ps(tile + (2 * k + 1) * 16);
    a[k] = _mm512_add_ps(_mm512_unpacklo_ps(v0, v1), _mm512_unpackhi_ps(v0, v1));
  }
  for (int k = 0; k < 4; ++k) {  // 64-bit interleave: per 128-bit lane, sums of v[4k..4k+3]
    __m512d x = _mm512_castps_pd(a[2 * k]), y = _mm512_castps_pd(a[2 * k + 1]);
    b[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  for (int k = 0; k < 2; ++k)  // 128-bit lanes: pairs of quarters
    c[k] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * k], b[2 * k + 1], 0x88),
                         _mm512_shuffle_f32x4(b[2 * k], b[2 * k + 1], 0xDD));
  _mm512_storeu_ps(out, _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88),
                                      _mm512_shuffle_f32x4(c[0], c[1], 0xDD)));
}
#pragma GCC diagnostic pop
#endif

// sums[n] = sum_l partial[n * 16 + l] for n < count (partial padded to 16-row tiles)
template <class S>
inline void hsum_rows(const S* partial, int64_t count, S* sums) {
  alignas(64) S tmp[16];
  for (int64_t n0 = 0; n0 < count; n0 += 16) {
    hsum_tile(partial + n0 * 16, tmp);
    for (int64_t i = 0; i < 16 && n0 + i < count; ++i) sums[n0 + i] = tmp[i];
  }
}

}  // namespace

// ================================================================================================
// Mamba: the selective scan with the D skip and the silu(z) gate fused
//   h_t[d, n] = exp(delta_t[d] A[d, n]) h_{t-1}[d, n] + delta_t[d] u_t[d] B_t[n]
//   out_t[d] = (sum_n C_t[n] h_t[d, n] + D[d] u_t[d]) * silu(z_t[d])
// ================================================================================================
struct ScanArgs {
  const void* u;
  int64_t u_sb, u_sl;
  const void* delta;  // after softplus
  int64_t delta_sb, delta_sl;
  const void* At;  // (N, D) contiguous: A transposed
  const void* B;
  int64_t B_sb, B_sl;
  const void* C;
  int64_t C_sb, C_sl;
  const void* Dskip;  // (D) or null
  const void* z;      // or null: no gate
  int64_t z_sb, z_sl;
  void* out;           // (Bz, L, D) contiguous
  void* ck;            // (Bz, nck, N, D) contiguous: the state entering each chunk
  const void* gout;    // (Bz, L, D) contiguous
  void* gu;            // (Bz, L, D)
  void* gdelta;        // (Bz, L, D)
  void* gz;            // (Bz, L, D) or null
  void* gA;            // (Bz, N, D): per batch element
  void* gB;            // (nblk, Bz, L, N): per channel block
  void* gC;            // (nblk, Bz, L, N)
  void* gD;            // (Bz, D) or null
  void* last;          // (Bz, N, D) or null: the state after the last step (forward only)
  int64_t Bz, L, D, N, T, nthreads;
};

namespace {

constexpr int64_t kScanBlock = 2 * kW;  // channels per task

template <class S>
struct ScanTask {
  static constexpr int64_t DB = kScanBlock;
  const ScanArgs& a;
  int64_t b, d0, nb;
  std::vector<S> At;  // (N, DB) zero-padded

  ScanTask(const ScanArgs& args, int64_t bb, int64_t blk)
      : a(args), b(bb), d0(blk * DB), nb(std::min(DB, args.D - blk * DB)), At(args.N * DB, S(0)) {
    const S* A = static_cast<const S*>(a.At);
    for (int64_t n = 0; n < a.N; ++n)
      for (int64_t j = 0; j < nb; ++j) At[n * DB + j] = A[n * a.D + d0 + j];
  }

  // delta and delta * u at time t, zero past the block's last channel
  void load(int64_t t, S* dl, S* du) const {
    const S* dr = row<S>(a.delta, a.delta_sb, a.delta_sl, b, t) + d0;
    const S* ur = row<S>(a.u, a.u_sb, a.u_sl, b, t) + d0;
    for (int64_t j = 0; j < DB; ++j) {
      S d = j < nb ? dr[j] : S(0);
      dl[j] = d;
      du[j] = j < nb ? d * ur[j] : S(0);
    }
  }

  // One step of the recurrence on h (N, DB); y (DB) gets sum_n C_t[n] h_t[., n]. With hs
  // non-null the new states and decays are stored in hs, as (N, DB) too.
  template <bool kStore>
  void step(int64_t t, const S* dl, const S* du, S* h, S* y, S* hs, S* as) const {
    const S* Br = row<S>(a.B, a.B_sb, a.B_sl, b, t);
    const S* Cr = row<S>(a.C, a.C_sb, a.C_sl, b, t);
    for (int64_t jb = 0; jb < DB; jb += kW) {
      alignas(64) S yv[kW] = {};
      for (int64_t n = 0; n < a.N; ++n) {
        const S bn = Br[n], cn = Cr[n];
        S* hn = h + n * DB + jb;
        const S* An = At.data() + n * DB + jb;
#pragma omp simd
        for (int64_t l = 0; l < kW; ++l) {
          S dA = ex(dl[jb + l] * An[l]);
          S hv = dA * hn[l] + du[jb + l] * bn;
          hn[l] = hv;
          if constexpr (kStore) {
            hs[n * DB + jb + l] = hv;
            as[n * DB + jb + l] = dA;
          }
          yv[l] += cn * hv;
        }
      }
      for (int64_t l = 0; l < kW; ++l) y[jb + l] = yv[l];
    }
  }

  void forward() const {
    const int64_t N = a.N, L = a.L, T = a.T, D = a.D;
    const int64_t nck = (L + T - 1) / T;
    std::vector<S> h(N * DB, S(0));
    alignas(64) S dl[DB], du[DB], y[DB];
    const S* Dsk = static_cast<const S*>(a.Dskip);
    for (int64_t t = 0; t < L; ++t) {
      if (t % T == 0) {
        S* ck = static_cast<S*>(a.ck) + ((b * nck + t / T) * N) * D + d0;
        for (int64_t n = 0; n < N; ++n)
          std::memcpy(ck + n * D, h.data() + n * DB, nb * sizeof(S));
      }
      load(t, dl, du);
      step<false>(t, dl, du, h.data(), y, nullptr, nullptr);
      const S* ur = row<S>(a.u, a.u_sb, a.u_sl, b, t) + d0;
      S* o = static_cast<S*>(a.out) + (b * L + t) * D + d0;
      if (a.z) {
        const S* zr = row<S>(a.z, a.z_sb, a.z_sl, b, t) + d0;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) {
          S s = y[j] + (Dsk ? Dsk[d0 + j] * ur[j] : S(0));
          o[j] = s * zr[j] * sigmoid(zr[j]);
        }
      } else {
        for (int64_t j = 0; j < nb; ++j) o[j] = y[j] + (Dsk ? Dsk[d0 + j] * ur[j] : S(0));
      }
    }
    if (a.last) {  // the state a streaming step continues from
      S* last = static_cast<S*>(a.last) + b * N * D + d0;
      for (int64_t n = 0; n < N; ++n) std::memcpy(last + n * D, h.data() + n * DB, nb * sizeof(S));
    }
  }

  void backward(int64_t blk) const {
    const int64_t N = a.N, L = a.L, T = a.T, D = a.D, Np = pad16(N);
    const int64_t nck = (L + T - 1) / T;
    const S* Dsk = static_cast<const S*>(a.Dskip);
    const size_t ND = N * DB, R = padded(ND);  // R: row stride of the chunk buffers
    Carve<S> c{scratch<S>(2 * padded(T * R) + 3 * padded(T * DB) + 4 * R + 2 * padded(Np * kW))};
    S *hs = c.take(T * R), *as = c.take(T * R), *dls = c.take(T * DB), *dus = c.take(T * DB);
    S *ys = c.take(T * DB), *h = c.take(ND), *h0 = c.take(ND), *g = c.take(ND);
    S *gAacc = c.take(ND), *rC = c.take(Np * kW), *rB = c.take(Np * kW);  // partial sums
    std::fill(g, g + ND, S(0));
    std::fill(gAacc, gAacc + ND, S(0));
    std::fill(rC, rC + Np * kW, S(0));  // rows past N stay 0
    std::fill(rB, rB + Np * kW, S(0));
    alignas(64) S gyp[DB], gdu[DB], gdlA[DB], gskip[DB], gDacc[DB] = {};
    S* gBp = static_cast<S*>(a.gB) + (blk * a.Bz + b) * L * N;
    S* gCp = static_cast<S*>(a.gC) + (blk * a.Bz + b) * L * N;
    for (int64_t k = nck - 1; k >= 0; --k) {
      const int64_t t0 = k * T, t1 = std::min(L, t0 + T);
      const S* ck = static_cast<const S*>(a.ck) + ((b * nck + k) * N) * D + d0;
      std::fill(h, h + ND, S(0));
      for (int64_t n = 0; n < N; ++n) std::memcpy(h + n * DB, ck + n * D, nb * sizeof(S));
      std::copy(h, h + ND, h0);
      for (int64_t t = t0; t < t1; ++t) {  // recompute the chunk's states from its checkpoint
        const int64_t i = t - t0;
        load(t, dls + i * DB, dus + i * DB);
        step<true>(t, dls + i * DB, dus + i * DB, h, ys + i * DB, hs + i * R, as + i * R);
      }
      for (int64_t t = t1 - 1; t >= t0; --t) {  // the adjoint, right to left
        const int64_t i = t - t0;
        const S* hprev = i > 0 ? hs + (i - 1) * R : h0;
        const S* hi = hs + i * R;
        const S* ai = as + i * R;
        const S* dl = dls + i * DB;
        const S* du = dus + i * DB;
        const S* ur = row<S>(a.u, a.u_sb, a.u_sl, b, t) + d0;
        const S* go = static_cast<const S*>(a.gout) + (b * L + t) * D + d0;
        for (int64_t j = 0; j < DB; ++j) {
          gyp[j] = S(0);
          gskip[j] = S(0);
        }
        if (a.z) {
          const S* zr = row<S>(a.z, a.z_sb, a.z_sl, b, t) + d0;
          S* gzr = static_cast<S*>(a.gz) + (b * L + t) * D + d0;
#pragma omp simd
          for (int64_t j = 0; j < nb; ++j) {
            S zz = zr[j], sg = sigmoid(zz);
            S s = ys[i * DB + j] + (Dsk ? Dsk[d0 + j] * ur[j] : S(0));
            gyp[j] = go[j] * zz * sg;
            gzr[j] = go[j] * s * sg * (S(1) + zz * (S(1) - sg));
          }
        } else {
          for (int64_t j = 0; j < nb; ++j) gyp[j] = go[j];
        }
        if (Dsk) {
          for (int64_t j = 0; j < nb; ++j) {
            gDacc[j] += gyp[j] * ur[j];
            gskip[j] = gyp[j] * Dsk[d0 + j];
          }
        }
        const S* Br = row<S>(a.B, a.B_sb, a.B_sl, b, t);
        const S* Cr = row<S>(a.C, a.C_sb, a.C_sl, b, t);
        for (int64_t j = 0; j < DB; ++j) {
          gdu[j] = S(0);
          gdlA[j] = S(0);
        }
        for (int64_t n = 0; n < N; ++n) {  // both lane blocks at once: sums stay in registers
          const S bn = Br[n], cn = Cr[n];
          alignas(64) S rc[kW] = {}, rb[kW] = {};
          for (int64_t jb = 0; jb < DB; jb += kW) {
            const int64_t o = n * DB + jb;
            const S* An = At.data() + o;
#pragma omp simd
            for (int64_t l = 0; l < kW; ++l) {
              S gv = g[o + l] + cn * gyp[jb + l];  // dL/dh_t
              rc[l] += hi[o + l] * gyp[jb + l];
              rb[l] += gv * du[jb + l];
              gdu[jb + l] += bn * gv;
              S gah = gv * ai[o + l] * hprev[o + l];  // dL/d(delta_t A) = g_t a_t h_{t-1}
              gdlA[jb + l] += gah * An[l];
              gAacc[o + l] += gah * dl[jb + l];
              g[o + l] = ai[o + l] * gv;  // flows into h_{t-1}
            }
          }
#pragma omp simd  // one vector store each (without the pragma: 16 lane extracts)
          for (int64_t l = 0; l < kW; ++l) {
            rC[n * kW + l] = rc[l];
            rB[n * kW + l] = rb[l];
          }
        }
        hsum_rows(rB, N, gBp + t * N);
        hsum_rows(rC, N, gCp + t * N);
        S* gur = static_cast<S*>(a.gu) + (b * L + t) * D + d0;
        S* gdr = static_cast<S*>(a.gdelta) + (b * L + t) * D + d0;
        for (int64_t j = 0; j < nb; ++j) {
          gdr[j] = gdu[j] * ur[j] + gdlA[j];
          gur[j] = gdu[j] * dl[j] + gskip[j];
        }
      }
    }
    S* gA = static_cast<S*>(a.gA) + b * N * D + d0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < nb; ++j) gA[n * D + j] = gAacc[n * DB + j];
    if (a.gD) {
      S* gD = static_cast<S*>(a.gD) + b * D + d0;
      for (int64_t j = 0; j < nb; ++j) gD[j] = gDacc[j];
    }
  }
};

template <class S>
void scan_run(const ScanArgs& a, bool backward) {
  const int64_t nblk = (a.D + kScanBlock - 1) / kScanBlock;
  const double work = double(a.Bz) * a.L * a.D * a.N * (backward ? 3 : 1);
  parallel_for(a.Bz * nblk, useful_threads(a.nthreads, work), [&](int64_t task) {
    ScanTask<S> st(a, task / nblk, task % nblk);
    if (backward)
      st.backward(task % nblk);
    else
      st.forward();
  });
}

}  // namespace

// ================================================================================================
// Mamba-2: the SSD recurrence per (batch element, head), state (N, P), with the D skip fused
//   H_t = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T        y_t = H_t C_t + D_h x_t
// ================================================================================================
struct SsdArgs {
  const void* x;  // rows of H * P: head h at h * P
  int64_t x_sb, x_sl;
  const void* dt;  // rows of H, after softplus
  int64_t dt_sb, dt_sl;
  const void* A;  // (H)
  const void* B;  // rows of G * N: group g at g * N
  int64_t B_sb, B_sl;
  const void* C;
  int64_t C_sb, C_sl;
  const void* Dskip;  // (H) or null
  void* y;            // (Bz, L, H * P) contiguous
  void* ck;           // (Bz, H, nck, N, Pp) contiguous, Pp = P rounded up to 16
  const void* gy;     // (Bz, L, H * P) contiguous
  void* gx;           // (Bz, L, H * P)
  void* gdt;          // (Bz, L, H)
  void* gA;           // (Bz, H)
  void* gB;           // (H, Bz, L, N): per head
  void* gC;           // (H, Bz, L, N)
  void* gD;           // (Bz, H) or null
  void* last;         // (Bz, H, N, Pp) or null: the state after the last step (forward only)
  int64_t Bz, L, H, P, G, N, T, nthreads;
};

namespace {

template <class S>
struct SsdTask {
  const SsdArgs& a;
  int64_t b, h, grp, Pp;
  SsdTask(const SsdArgs& args, int64_t bb, int64_t hh)
      : a(args), b(bb), h(hh), grp(hh / (args.H / args.G)), Pp(pad16(args.P)) {}

  // dt_t x_t (zero-padded to Pp) into xdt; returns dt_t
  S load(int64_t t, S* xdt) const {
    const S dtv = row<S>(a.dt, a.dt_sb, a.dt_sl, b, t)[h];
    const S* xr = row<S>(a.x, a.x_sb, a.x_sl, b, t) + h * a.P;
    for (int64_t p = 0; p < Pp; ++p) xdt[p] = p < a.P ? dtv * xr[p] : S(0);
    return dtv;
  }

  // one step on the state st (N, Pp), lane blocks outside so that y (Pp), which gets H_t C_t,
  // accumulates in registers
  void step(int64_t t, S dtv, const S* xdt, S* st, S* y) const {
    const int64_t N = a.N;
    const S dA = ex(dtv * static_cast<const S*>(a.A)[h]);
    const S* Br = row<S>(a.B, a.B_sb, a.B_sl, b, t) + grp * N;
    const S* Cr = row<S>(a.C, a.C_sb, a.C_sl, b, t) + grp * N;
    for (int64_t pb = 0; pb < Pp; pb += kW) {
      alignas(64) S yv[kW] = {};
      for (int64_t n = 0; n < N; ++n) {
        const S bn = Br[n], cn = Cr[n];
        S* sn = st + n * Pp + pb;
#pragma omp simd
        for (int64_t l = 0; l < kW; ++l) {
          S hv = dA * sn[l] + xdt[pb + l] * bn;
          sn[l] = hv;
          yv[l] += cn * hv;
        }
      }
      for (int64_t l = 0; l < kW; ++l) y[pb + l] = yv[l];
    }
  }

  void forward() const {
    const int64_t N = a.N, P = a.P, L = a.L, T = a.T, HP = a.H * a.P;
    const int64_t nck = (L + T - 1) / T;
    std::vector<S> st(N * Pp, S(0)), xdt(Pp), y(Pp);
    const S Dh = a.Dskip ? static_cast<const S*>(a.Dskip)[h] : S(0);
    for (int64_t t = 0; t < L; ++t) {
      if (t % T == 0) {
        S* ck = static_cast<S*>(a.ck) + ((b * a.H + h) * nck + t / T) * N * Pp;
        std::memcpy(ck, st.data(), N * Pp * sizeof(S));
      }
      const S dtv = load(t, xdt.data());
      step(t, dtv, xdt.data(), st.data(), y.data());
      const S* xr = row<S>(a.x, a.x_sb, a.x_sl, b, t) + h * P;
      S* yr = static_cast<S*>(a.y) + (b * L + t) * HP + h * P;
#pragma omp simd
      for (int64_t p = 0; p < P; ++p) yr[p] = y[p] + Dh * xr[p];
    }
    if (a.last)  // the state a streaming step continues from
      std::memcpy(static_cast<S*>(a.last) + (b * a.H + h) * N * Pp, st.data(), N * Pp * sizeof(S));
  }

  // The recomputation of H_t = a_t H_{t-1} + B_t (dt_t x_t) from hprev into hi (both (N, Pp)),
  // and, while H_t is in registers, the per-lane partial sums of dL/dC_t[n] = H_t[n, :] . gy_t
  // (rows of kW in rC). NB lane blocks unrolled (0: Pp / kW at run time).
  template <int NB>
  void recompute(S dA, const S* Br, const S* xdt, const S* gyp, const S* hprev, S* hi,
                 S* rC) const {
    const int64_t nbk = NB > 0 ? NB : Pp / kW;
    for (int64_t n = 0; n < a.N; ++n) {
      const S bn = Br[n];
      alignas(64) S rc[kW] = {};
      for (int64_t pb = 0; pb < nbk; ++pb) {
        const int64_t o = n * Pp + pb * kW;
#pragma omp simd
        for (int64_t l = 0; l < kW; ++l) {
          S hv = dA * hprev[o + l] + xdt[pb * kW + l] * bn;
          hi[o + l] = hv;
          rc[l] += hv * gyp[pb * kW + l];
        }
      }
#pragma omp simd  // one vector store (without the pragma: 16 lane extracts)
      for (int64_t l = 0; l < kW; ++l) rC[n * kW + l] = rc[l];
    }
  }

  // One step of the adjoint at time t: g (a_{t+1} dL/dH_{t+1} on entry) becomes a_t dL/dH_t;
  // rB gets per-lane partial sums of dL/dB_t, gxdt = dL/d(dt_t x_t), gdav += per-lane dL/da_t.
  template <int NB>
  void reverse(const S* Br, const S* Cr, const S* gyp, const S* xdt, const S* hprev, S* g,
               S ai, S* rB, S* gxdt, S* gdav) const {
    const int64_t nbk = NB > 0 ? NB : Pp / kW;
    alignas(64) S local[NB > 0 ? NB : 1][kW] = {};
    S* gx = NB > 0 ? &local[0][0] : gxdt;  // the generic case accumulates in memory
    if (NB == 0) std::fill(gxdt, gxdt + Pp, S(0));
    for (int64_t n = 0; n < a.N; ++n) {
      const S bn = Br[n], cn = Cr[n];
      alignas(64) S rb[kW] = {};
      for (int64_t pb = 0; pb < nbk; ++pb) {
        const int64_t o = n * Pp + pb * kW;
        const S* gy = gyp + pb * kW;
        const S* xd = xdt + pb * kW;
#pragma omp simd
        for (int64_t l = 0; l < kW; ++l) {
          S gv = g[o + l] + cn * gy[l];  // dL/dH_t
          rb[l] += gv * xd[l];
          gx[pb * kW + l] += bn * gv;
          gdav[l] += gv * hprev[o + l];
          g[o + l] = ai * gv;
        }
      }
#pragma omp simd
      for (int64_t l = 0; l < kW; ++l) rB[n * kW + l] = rb[l];
    }
    if (NB > 0) std::copy(gx, gx + Pp, gxdt);
  }

  template <int NB>
  void backward_nb() const {
    const int64_t N = a.N, P = a.P, L = a.L, T = a.T, H = a.H, HP = a.H * a.P, Np = pad16(N);
    const int64_t nck = (L + T - 1) / T;
    const S Ah = static_cast<const S*>(a.A)[h];
    const S Dh = a.Dskip ? static_cast<const S*>(a.Dskip)[h] : S(0);
    const size_t NP = N * Pp, R = padded(NP);  // R: row stride of the chunk buffer
    Carve<S> c{scratch<S>(padded(T * R) + 2 * padded(T * Pp) + 2 * padded(T) + R + padded(Pp) +
                          2 * padded(Np * kW))};
    S *hs = c.take(T * R), *xdts = c.take(T * Pp), *as = c.take(T), *dts = c.take(T);
    S *g = c.take(NP), *gxdt = c.take(Pp), *gys = c.take(T * Pp);
    S *rC = c.take(Np * kW), *rB = c.take(Np * kW);  // per-state partial sums
    std::fill(g, g + NP, S(0));
    std::fill(gys, gys + T * Pp, S(0));  // lanes past P stay 0
    std::fill(rC, rC + Np * kW, S(0));   // rows past N stay 0
    std::fill(rB, rB + Np * kW, S(0));
    S gAacc = S(0), gDacc = S(0);
    S* gBp = static_cast<S*>(a.gB) + (h * a.Bz + b) * L * N;
    S* gCp = static_cast<S*>(a.gC) + (h * a.Bz + b) * L * N;
    for (int64_t k = nck - 1; k >= 0; --k) {
      const int64_t t0 = k * T, t1 = std::min(L, t0 + T);
      const S* h0 = static_cast<const S*>(a.ck) + ((b * H + h) * nck + k) * NP;  // H_{t0 - 1}
      for (int64_t t = t0; t < t1; ++t) {  // the chunk's states again, and dL/dC
        const int64_t i = t - t0;
        dts[i] = load(t, xdts + i * Pp);
        as[i] = ex(dts[i] * Ah);
        S* gy = gys + i * Pp;
        const S* gyr = static_cast<const S*>(a.gy) + (b * L + t) * HP + h * P;
        std::copy(gyr, gyr + P, gy);
        const S* Br = row<S>(a.B, a.B_sb, a.B_sl, b, t) + grp * N;
        recompute<NB>(as[i], Br, xdts + i * Pp, gy, i > 0 ? hs + (i - 1) * R : h0, hs + i * R,
                      rC);
        hsum_rows(rC, N, gCp + t * N);
      }
      for (int64_t t = t1 - 1; t >= t0; --t) {  // the adjoint, right to left
        const int64_t i = t - t0;
        const S* hprev = i > 0 ? hs + (i - 1) * R : h0;
        const S* xdt = xdts + i * Pp;
        const S* gy = gys + i * Pp;
        const S ai = as[i], dtv = dts[i];
        const S* xr = row<S>(a.x, a.x_sb, a.x_sl, b, t) + h * P;
        const S* Br = row<S>(a.B, a.B_sb, a.B_sl, b, t) + grp * N;
        const S* Cr = row<S>(a.C, a.C_sb, a.C_sl, b, t) + grp * N;
        alignas(64) S gdav[kW] = {};  // dL/da_t = sum g_t H_{t-1}, per lane
        reverse<NB>(Br, Cr, gy, xdt, hprev, g, ai, rB, gxdt, gdav);
        hsum_rows(rB, N, gBp + t * N);
        S gda = S(0);
        for (int64_t l = 0; l < kW; ++l) gda += gdav[l];
        S gdt = gda * ai * Ah, gD = S(0);
        S* gxr = static_cast<S*>(a.gx) + (b * L + t) * HP + h * P;
#pragma omp simd reduction(+ : gdt, gD)
        for (int64_t p = 0; p < P; ++p) {
          gdt += gxdt[p] * xr[p];
          gD += gy[p] * xr[p];
          gxr[p] = gxdt[p] * dtv + gy[p] * Dh;
        }
        static_cast<S*>(a.gdt)[(b * L + t) * H + h] = gdt;
        gAacc += gda * ai * dtv;
        gDacc += gD;
      }
    }
    static_cast<S*>(a.gA)[b * H + h] = gAacc;
    if (a.gD) static_cast<S*>(a.gD)[b * H + h] = gDacc;
  }

  void backward() const {
    if constexpr (std::is_same_v<S, double>) {  // fp64 serves references: one generic copy
      return backward_nb<0>();
    } else {
      switch (Pp / kW) {  // the lane blocks of P unrolled: every accumulator in a register
        case 1: return backward_nb<1>();
        case 2: return backward_nb<2>();
        case 4: return backward_nb<4>();
        case 8: return backward_nb<8>();
        default: return backward_nb<0>();
      }
    }
  }
};

template <class S>
void ssd_run(const SsdArgs& a, bool backward) {
  const double work = double(a.Bz) * a.L * a.H * a.P * a.N * (backward ? 3 : 1);
  parallel_for(a.Bz * a.H, useful_threads(a.nthreads, work), [&](int64_t task) {
    SsdTask<S> st(a, task / a.H, task % a.H);
    if (backward)
      st.backward();
    else
      st.forward();
  });
}

}  // namespace

// ================================================================================================
// The causal depthwise convolution, optionally followed by silu
//   pre_t[c] = bias[c] + sum_k w[c, k] x_{t-K+1+k}[c]    (x_s = 0 for s < 0)
// ================================================================================================
struct ConvArgs {
  const void* x;
  int64_t x_sb, x_sl;
  const void* wt;    // (K, C) contiguous: the weight transposed
  const void* bias;  // (C) or null
  void* out;         // (Bz, L, C) contiguous
  const void* gout;  // (Bz, L, C) contiguous
  void* gx;          // (Bz, L, C)
  void* gw;          // (Bz, K, C): per batch element
  void* gbias;       // (Bz, C) or null
  int64_t Bz, L, C, K, silu, nthreads;
};

namespace {

constexpr int64_t kConvBlock = 4 * kW;  // channels per task
constexpr int64_t kMaxTaps = 16;

// One task: batch element b, channels [c0, c0 + nb). The last K input rows live in a ring of
// fixed-width, zero-padded rows, so every vector loop runs over all kConvBlock lanes.
template <class S>
struct ConvTask {
  static constexpr int64_t CB = kConvBlock;
  const ConvArgs& a;
  int64_t b, c0, nb, K;
  alignas(64) S w[kMaxTaps][CB];
  alignas(64) S bias[CB];
  alignas(64) S ring[kMaxTaps][CB];  // x_s at slot s % K

  ConvTask(const ConvArgs& args, int64_t bb, int64_t cc0)
      : a(args), b(bb), c0(cc0), nb(std::min(CB, args.C - cc0)), K(args.K) {
    const S* wt = static_cast<const S*>(a.wt);
    const S* bs = static_cast<const S*>(a.bias);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < CB; ++c) {
        w[k][c] = c < nb ? wt[k * a.C + c0 + c] : S(0);
        ring[k][c] = S(0);
      }
    for (int64_t c = 0; c < CB; ++c) bias[c] = bs && c < nb ? bs[c0 + c] : S(0);
  }

  void push(int64_t s) {  // x_s into the ring (zeros for s < 0)
    S* r = ring[((s % K) + K) % K];
    const S* xr = s >= 0 ? row<S>(a.x, a.x_sb, a.x_sl, b, s) + c0 : nullptr;
    for (int64_t c = 0; c < CB; ++c) r[c] = xr && c < nb ? xr[c] : S(0);
  }

  // pre_t from the ring, which must hold x_{t-K+1} .. x_t
  void pre(int64_t t, S* out) const {
    alignas(64) S acc[CB];
    for (int64_t c = 0; c < CB; ++c) acc[c] = bias[c];
    for (int64_t k = 0; k < K; ++k) {
      const S* r = ring[(t - K + 1 + k + K * (K + t)) % K];
#pragma omp simd
      for (int64_t c = 0; c < CB; ++c) acc[c] += w[k][c] * r[c];
    }
    for (int64_t c = 0; c < CB; ++c) out[c] = acc[c];
  }

  void forward() {
    alignas(64) S p[CB];
    S* o = static_cast<S*>(a.out) + b * a.L * a.C + c0;
    for (int64_t t = 0; t < a.L; ++t, o += a.C) {
      push(t);
      pre(t, p);
      if (a.silu) {
#pragma omp simd
        for (int64_t c = 0; c < CB; ++c) p[c] = p[c] * sigmoid(p[c]);
      }
      std::memcpy(o, p, nb * sizeof(S));
    }
  }

  // Right to left: dL/dpre_t needs pre_t (recomputed from x_{t-K+1..t}), and x_t feeds
  // pre_{t..t+K-1}, whose gradients a second ring keeps.
  void backward() {
    const int64_t L = a.L, C = a.C;
    alignas(64) S gring[kMaxTaps][CB] = {};  // dL/dpre_s at slot s % K
    alignas(64) S gw[kMaxTaps][CB] = {};
    alignas(64) S gb[CB] = {}, p[CB], gx[CB];
    for (int64_t s = L - K; s < L; ++s) push(s);  // the ring holds x_{L-K} .. x_{L-1}
    for (int64_t t = L - 1; t >= 0; --t) {
      pre(t, p);
      const S* go = static_cast<const S*>(a.gout) + (b * L + t) * C + c0;
      S* gp = gring[t % K];
      for (int64_t c = 0; c < CB; ++c) gp[c] = c < nb ? go[c] : S(0);
      if (a.silu) {
#pragma omp simd
        for (int64_t c = 0; c < CB; ++c) {
          S sg = sigmoid(p[c]);
          gp[c] = gp[c] * sg * (S(1) + p[c] * (S(1) - sg));
        }
      }
#pragma omp simd
      for (int64_t c = 0; c < CB; ++c) gb[c] += gp[c];
      for (int64_t k = 0; k < K; ++k) {  // pre_t read x_{t-K+1+k} through tap k
        const S* r = ring[(t - K + 1 + k + K * (K + t)) % K];
#pragma omp simd
        for (int64_t c = 0; c < CB; ++c) gw[k][c] += gp[c] * r[c];
      }
      for (int64_t c = 0; c < CB; ++c) gx[c] = S(0);
      for (int64_t k = std::max<int64_t>(0, t + K - L); k < K; ++k) {  // x_t fed pre_{t+K-1-k}
        const S* gs = gring[(t + K - 1 - k) % K];
#pragma omp simd
        for (int64_t c = 0; c < CB; ++c) gx[c] += w[k][c] * gs[c];
      }
      std::memcpy(static_cast<S*>(a.gx) + (b * L + t) * C + c0, gx, nb * sizeof(S));
      push(t - K);  // slide the window one step left: x_{t-K} replaces x_t
    }
    S* gwo = static_cast<S*>(a.gw) + b * K * C + c0;
    for (int64_t k = 0; k < K; ++k) std::memcpy(gwo + k * C, gw[k], nb * sizeof(S));
    if (a.gbias) std::memcpy(static_cast<S*>(a.gbias) + b * C + c0, gb, nb * sizeof(S));
  }
};

template <class S>
void conv_run(const ConvArgs& a, bool backward) {
  const int64_t nblk = (a.C + kConvBlock - 1) / kConvBlock;
  const double work = double(a.Bz) * a.L * a.C * (a.K + 8) * (backward ? 3 : 1);
  parallel_for(a.Bz * nblk, useful_threads(a.nthreads, work), [&](int64_t task) {
    ConvTask<S> ct(a, task / nblk, (task % nblk) * kConvBlock);
    if (backward)
      ct.backward();
    else
      ct.forward();
  });
}

}  // namespace

// ================================================================================================
// The elementwise linear recurrence of minGRU, minLSTM and the LRU, real or complex
//   h_t[c] = a_t[c] h_{t-1}[c] + b_t[c]        h_{-1} = 0
// backward, right to left (PyTorch's convention for complex tensors: conjugates)
//   g_t = dL/dh_t + conj(a_{t+1}) g_{t+1}      dL/db_t = g_t      dL/da_t = g_t conj(h_{t-1})
// The output is every state, so the forward writes nothing else, and the backward reads the
// states h_{t-1} from it instead of recomputing them. Complex numbers are interleaved (re, im),
// as torch.view_as_real lays them out; strides and C count real scalars (2 per complex).
//
// gate = 1 computes the coefficients of minGRU and minLSTM inside (real only): `a` holds the
// logit z and `b` the pre-activation x, and
//   a_t = sigmoid(-z_t)      b_t = sigmoid(z_t) g(x_t)      g(x) = x + 1/2 (x >= 0), sigmoid(x)
// the backward writes dL/dz to `ga` and dL/dx to `gb`: 2 tensors read and 1 written forward,
// 4 read and 2 written backward, instead of about 20 passes of the elementwise gate ops.
// ================================================================================================
struct LinScanArgs {
  const void* a;  // rows of C; a_sb = 0: shared by the batch, a_sl = 0: time-invariant
  int64_t a_sb, a_sl;
  const void* b;
  int64_t b_sb, b_sl;
  void* h;           // (Bz, L, C) contiguous: the states (forward output, backward input)
  const void* gh;    // (Bz, L, C) contiguous
  void* gb;          // (Bz, L, C) contiguous
  void* ga;          // (Bz, L, C) if a_sl != 0, else (Bz, C) summed over time; or null
  int64_t Bz, L, C, cplx, gate, nthreads;
};

namespace {

// A task runs a whole row of channels (up to kLinMaxBlock scalars) of one batch element, so each
// step reads and writes contiguous rows; rows are split only to give every thread work. Blocks
// of 64 scalars ran 2-3x slower (strided rows, one narrow stream per task).
constexpr int64_t kLinMaxBlock = 1024;

int64_t linscan_block(const LinScanArgs& a) {
  const int64_t want_tasks = 2 * std::max<int64_t>(1, a.nthreads);
  int64_t blk = a.C;
  if (a.Bz < want_tasks) blk = (a.C * a.Bz + want_tasks - 1) / want_tasks;
  blk = std::min(kLinMaxBlock, std::max<int64_t>(64, (blk + 15) / 16 * 16));
  return std::min(blk, (a.C + 1) / 2 * 2);  // even: complex pairs stay together
}

template <class S>
struct LinScanTask {
  const LinScanArgs& a;
  int64_t b, c0, nb, CB;  // batch element, first scalar, scalars in this block, block size

  LinScanTask(const LinScanArgs& args, int64_t bb, int64_t cc0, int64_t blk)
      : a(args), b(bb), c0(cc0), nb(std::min(blk, args.C - cc0)), CB(blk) {}

  const S* arow(int64_t t) const { return row<S>(a.a, a.a_sb, a.a_sl, b, t) + c0; }
  const S* brow(int64_t t) const { return row<S>(a.b, a.b_sb, a.b_sl, b, t) + c0; }
  S* hrow(int64_t t) const { return static_cast<S*>(a.h) + (b * a.L + t) * a.C + c0; }

  // minGRU's g and its derivative
  static inline S gact(S x) { return x >= S(0) ? x + S(0.5) : sigmoid(x); }
  static inline S gact_grad(S x) {
    const S sg = sigmoid(x);
    return x >= S(0) ? S(1) : sg * (S(1) - sg);
  }

  void forward_gated() const {
    alignas(64) S s[kLinMaxBlock] = {};
    for (int64_t t = 0; t < a.L; ++t) {
      const S *zr = arow(t), *xr = brow(t);
      S* hr = hrow(t);
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) {
        const S z = zr[j];
        s[j] = sigmoid(-z) * s[j] + sigmoid(z) * gact(xr[j]);
        hr[j] = s[j];
      }
    }
  }

  void backward_gated() const {
    const int64_t L = a.L, C = a.C;
    alignas(64) S g[kLinMaxBlock] = {};  // a_{t+1} g_{t+1}, zero after the end
    for (int64_t t = L - 1; t >= 0; --t) {
      const S *zr = arow(t), *xr = brow(t);
      const S* gr = static_cast<const S*>(a.gh) + (b * L + t) * C + c0;
      const S* hp = t > 0 ? hrow(t - 1) : nullptr;
      S* gxr = static_cast<S*>(a.gb) + (b * L + t) * C + c0;
      S* gzr = static_cast<S*>(a.ga) + (b * L + t) * C + c0;
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) {
        const S z = zr[j], x = xr[j];
        const S sp = sigmoid(z), sm = sigmoid(-z);  // b's and a's gate, each accurate
        const S gv = gr[j] + g[j];                  // dL/dh_t
        const S hprev = hp ? hp[j] : S(0);
        gzr[j] = sp * sm * gv * (gact(x) - hprev);  // d a/dz = -sp sm, d b/dz = sp sm g(x)
        gxr[j] = gv * sp * gact_grad(x);
        g[j] = sm * gv;
      }
    }
  }

  void forward() const {
    if (a.gate) return forward_gated();
    alignas(64) S s[kLinMaxBlock] = {};  // real: the states; complex: real parts, then imaginary
    S* si = s + kLinMaxBlock / 2;
    const int64_t nk = nb / 2;  // complex channels in this block
    for (int64_t t = 0; t < a.L; ++t) {
      const S *ar = arow(t), *br = brow(t);
      S* hr = hrow(t);
      if (a.cplx) {
#pragma omp simd
        for (int64_t k = 0; k < nk; ++k) {
          const S are = ar[2 * k], aim = ar[2 * k + 1];
          const S re = are * s[k] - aim * si[k] + br[2 * k];
          const S im = are * si[k] + aim * s[k] + br[2 * k + 1];
          s[k] = re;
          si[k] = im;
          hr[2 * k] = re;
          hr[2 * k + 1] = im;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) {
          s[j] = ar[j] * s[j] + br[j];
          hr[j] = s[j];
        }
      }
    }
  }

  void backward() const {
    if (a.gate) return backward_gated();
    const int64_t L = a.L, C = a.C;
    const bool varying = a.a_sl != 0;
    alignas(64) S g[kLinMaxBlock] = {};    // conj(a_{t+1}) g_{t+1}, zero after the end
    alignas(64) S gas[kLinMaxBlock] = {};  // time-invariant a: dL/da summed over time
    for (int64_t t = L - 1; t >= 0; --t) {
      const S* ar = arow(t);
      const S* gr = static_cast<const S*>(a.gh) + (b * L + t) * C + c0;
      const S* hp = t > 0 ? hrow(t - 1) : nullptr;  // h_{t-1}; h_{-1} = 0
      S* gbr = static_cast<S*>(a.gb) + (b * L + t) * C + c0;
      S* gar = a.ga && varying ? static_cast<S*>(a.ga) + (b * L + t) * C + c0 : nullptr;
      if (a.cplx) {  // g, gas: real parts in [0, CB / 2), imaginary parts after
        S *gi = g + kLinMaxBlock / 2, *gasi = gas + kLinMaxBlock / 2;
        const int64_t nk = nb / 2;
#pragma omp simd
        for (int64_t k = 0; k < nk; ++k) {
          const S gre = gr[2 * k] + g[k], gim = gr[2 * k + 1] + gi[k];
          gbr[2 * k] = gre;
          gbr[2 * k + 1] = gim;
          const S hre = hp ? hp[2 * k] : S(0), him = hp ? hp[2 * k + 1] : S(0);
          const S dre = gre * hre + gim * him, dim = gim * hre - gre * him;  // g conj(h)
          if (gar) {
            gar[2 * k] = dre;
            gar[2 * k + 1] = dim;
          } else {
            gas[k] += dre;
            gasi[k] += dim;
          }
          const S are = ar[2 * k], aim = ar[2 * k + 1];
          g[k] = are * gre + aim * gim;  // conj(a) g
          gi[k] = are * gim - aim * gre;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) {
          const S gv = gr[j] + g[j];
          gbr[j] = gv;
          const S d = hp ? gv * hp[j] : S(0);
          if (gar)
            gar[j] = d;
          else
            gas[j] += d;
          g[j] = ar[j] * gv;
        }
      }
    }
    if (a.ga && !varying) {
      S* gao = static_cast<S*>(a.ga) + b * C + c0;
      if (a.cplx) {
        for (int64_t k = 0; k < nb / 2; ++k) {
          gao[2 * k] = gas[k];
          gao[2 * k + 1] = gas[kLinMaxBlock / 2 + k];
        }
      } else {
        std::memcpy(gao, gas, nb * sizeof(S));
      }
    }
  }
};

template <class S>
void linscan_run(const LinScanArgs& a, bool backward) {
  const int64_t blk = linscan_block(a);
  const int64_t nblk = (a.C + blk - 1) / blk;
  const double work = double(a.Bz) * a.L * a.C * (backward ? 4 : 2) * (a.gate ? 8 : 1);
  parallel_for(a.Bz * nblk, useful_threads(a.nthreads, work), [&](int64_t task) {
    LinScanTask<S> lt(a, task / nblk, (task % nblk) * blk, blk);
    if (backward)
      lt.backward();
    else
      lt.forward();
  });
}

}  // namespace

// ---- the C ABI -------------------------------------------------------------------------------
SB_API int sb_abi_version() { return kAbiVersion; }
SB_API int64_t sb_scan_block() { return kScanBlock; }
SB_API int64_t sb_conv_max_taps() { return kMaxTaps; }

SB_API void sb_scan_fwd_f32(const ScanArgs* a) { scan_run<float>(*a, false); }
SB_API void sb_scan_bwd_f32(const ScanArgs* a) { scan_run<float>(*a, true); }
SB_API void sb_scan_fwd_f64(const ScanArgs* a) { scan_run<double>(*a, false); }
SB_API void sb_scan_bwd_f64(const ScanArgs* a) { scan_run<double>(*a, true); }

SB_API void sb_ssd_fwd_f32(const SsdArgs* a) { ssd_run<float>(*a, false); }
SB_API void sb_ssd_bwd_f32(const SsdArgs* a) { ssd_run<float>(*a, true); }
SB_API void sb_ssd_fwd_f64(const SsdArgs* a) { ssd_run<double>(*a, false); }
SB_API void sb_ssd_bwd_f64(const SsdArgs* a) { ssd_run<double>(*a, true); }

SB_API void sb_conv_fwd_f32(const ConvArgs* a) { conv_run<float>(*a, false); }
SB_API void sb_conv_bwd_f32(const ConvArgs* a) { conv_run<float>(*a, true); }
SB_API void sb_conv_fwd_f64(const ConvArgs* a) { conv_run<double>(*a, false); }
SB_API void sb_conv_bwd_f64(const ConvArgs* a) { conv_run<double>(*a, true); }

SB_API void sb_linscan_fwd_f32(const LinScanArgs* a) { linscan_run<float>(*a, false); }
SB_API void sb_linscan_bwd_f32(const LinScanArgs* a) { linscan_run<float>(*a, true); }
SB_API void sb_linscan_fwd_f64(const LinScanArgs* a) { linscan_run<double>(*a, false); }
SB_API void sb_linscan_bwd_f64(const LinScanArgs* a) { linscan_run<double>(*a, true); }
