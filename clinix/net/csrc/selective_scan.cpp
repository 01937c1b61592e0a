// Fused selective scan for CPU: plain C++ with OpenMP, no torch headers (SPEC §4.5).
//
// Per batch b, channel d, state n (Mamba, reference §1.4), with the bias, softplus, skip D and
// gate z optional:
//     dt_t = softplus(delta_t + bias),
//     h_t = exp(dt_t * A_n) * h_{t-1} + dt_t * u_t * B_{t,n},   s_t = sum_n C_{t,n} * h_t,
//     y_t = (s_t + D * u_t) * silu(z_t)
// Layouts (all float32, C-contiguous): u, delta, z, y, du, ddelta, dz (batch, channels, length);
// A (channels, state); D, bias (channels); Bt, Ct, dBt, dCt (batch, length, state) -- time-major, so
// the state vector of one step is contiguous; checkpoints (batch, channels, blocks, state) hold h
// before every block of `block` steps, so the backward pass recomputes one block at a time from them.
// Work is split over (batch, channel) pairs; each pair runs its recurrence serially, vectorised over
// the state dimension. Pairs are handed out dynamically, 8 at a time, so that a thread slowed down by
// another process on its core holds up the others by at most 8 pairs.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int kMambaState = 16;  // Mamba's d_state: compiled with a fixed trip count, ~15% faster

// exp(x) in float, written so that the compiler can vectorise it: x = k*ln2 + r with |r| <= ln2/2,
// a degree-6 polynomial for exp(r) (Cephes expf coefficients, ~1 ulp), and 2^k built in the exponent
// bits. Inputs below -87 give 0 (true value < 1.7e-38); inputs above 88 are clamped.
inline float exp_approx(float x) {
    const float clamped = std::min(std::max(x, -87.0f), 88.0f);
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a library call.
    const float k = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (clamped - k * 0.693359375f) + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return static_cast<float>(x >= -87.0f) * (p * scale);
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// log(x) for normal x > 0, vectorisable: x = m 2^e with m in [sqrt(1/2), sqrt(2)), a degree-9
// polynomial in m - 1 (Cephes logf coefficients, ~1 ulp).
inline float log_approx(float x) {
    int32_t bits;
    std::memcpy(&bits, &x, sizeof(bits));
    int32_t exponent = ((bits >> 23) & 0xff) - 126;
    bits = (bits & 0x807fffff) | 0x3f000000;  // the mantissa, scaled into [0.5, 1)
    float m;
    std::memcpy(&m, &bits, sizeof(m));
    const bool low = m < 0.707106781186547524f;
    exponent -= static_cast<int32_t>(low);
    const float x1 = low ? m + m - 1.0f : m - 1.0f;
    const float x2 = x1 * x1;
    float p = 7.0376836292e-2f;
    p = p * x1 - 1.1514610310e-1f;
    p = p * x1 + 1.1676998740e-1f;
    p = p * x1 - 1.2420140846e-1f;
    p = p * x1 + 1.4249322787e-1f;
    p = p * x1 - 1.6668057665e-1f;
    p = p * x1 + 2.0000714765e-1f;
    p = p * x1 - 2.4999993993e-1f;
    p = p * x1 + 3.3333331174e-1f;
    const float e = static_cast<float>(exponent);
    return x1 + (p * x1 * x2 + e * -2.12194440e-4f - 0.5f * x2) + e * 0.693359375f;
}

// softplus as torch computes it (threshold 20): log(1 + exp(x)), with log1p accuracy for small
// exp(x) (log(u) w / (u - 1), u = 1 + w, corrects the rounding of u).
inline float softplus(float x) {
    const float w = exp_approx(std::min(x, 20.0f));
    const float u = 1.0f + w;
    const float log1p_w = u == 1.0f ? w : log_approx(u) * w / (u - 1.0f);
    return x > 20.0f ? x : log1p_w;
}

int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// The inputs of one (batch, channel) pair: its rows of u, dt and z (null: no gate), its row of A, its
// skip weight (0: no skip), and the batch element's time-major B and C. Functions take it by value:
// through a reference GCC reloads the fields after every store and vectorises the state loops with
// gathers, 2-3x slower.
struct Sequence {
    const float* u;
    const float* dt;
    const float* z;
    const float* a;
    const float* b;
    const float* c;
    float skip;
    int64_t length;
    int64_t state;
    int64_t block;

    int64_t blocks() const { return (length + block - 1) / block; }
};

// The pair's dt row from its delta row: delta + bias, through softplus if asked.
void compute_steps(const float* delta, float bias, bool use_softplus, int64_t length, float* steps) {
    if (use_softplus) {
#pragma omp simd
        for (int64_t t = 0; t < length; ++t) steps[t] = softplus(delta[t] + bias);
    } else {
#pragma omp simd
        for (int64_t t = 0; t < length; ++t) steps[t] = delta[t] + bias;
    }
}

// dL/d(delta) from dL/d(dt), in place; returns their sum, dL/d(bias).
double delta_gradient(const float* delta, float bias, bool use_softplus, int64_t length, float* grad) {
    if (use_softplus) {
#pragma omp simd
        for (int64_t t = 0; t < length; ++t) {
            const float x = delta[t] + bias;
            grad[t] *= x > 20.0f ? 1.0f : sigmoid(x);
        }
    }
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (int64_t t = 0; t < length; ++t) total += grad[t];
    return total;
}

// Per-thread scratch for the backward pass; a block's rows (a few KB) stay in L1.
struct Workspace {
    std::vector<float> history;    // row i: the state before step t0 + i (block + 1 rows)
    std::vector<float> decay;      // row i: exp(dt A) at step t0 + i
    std::vector<float> scan_out;   // s_t of the block's steps
    std::vector<float> grad_scan;  // dL/ds_t of the block's steps
    std::vector<float> adjoint;    // dL/dh of the step after the one being processed
    std::vector<float> dA_block;
    std::vector<double> dA_total;

    Workspace(int64_t state, int64_t block)
        : history((block + 1) * state), decay(block * state), scan_out(block), grad_scan(block),
          adjoint(state), dA_block(state), dA_total(state) {}
};

// y <- (y + D u) silu(z), one loop for each case so that both vectorise.
void apply_skip_and_gate(const Sequence seq, float* y) {
    if (seq.z == nullptr) {
#pragma omp simd
        for (int64_t t = 0; t < seq.length; ++t) y[t] += seq.skip * seq.u[t];
        return;
    }
#pragma omp simd
    for (int64_t t = 0; t < seq.length; ++t) y[t] = (y[t] + seq.skip * seq.u[t]) * seq.z[t] * sigmoid(seq.z[t]);
}

// Forward recurrence of one pair (kState > 0: the state size, fixed at compile time); writes y and,
// unless null, the state before every block.
template <int kState>
void forward_pair(const Sequence seq, float* y, float* checkpoints) {
    const int n_state = kState > 0 ? kState : static_cast<int>(seq.state);
    std::vector<float> h(n_state, 0.0f);
    float* hs = h.data();
    for (int64_t j = 0; j < seq.blocks(); ++j) {
        if (checkpoints != nullptr) std::memcpy(checkpoints + j * n_state, hs, n_state * sizeof(float));
        const int64_t t_end = std::min(seq.length, (j + 1) * seq.block);
        for (int64_t t = j * seq.block; t < t_end; ++t) {
            const float step = seq.dt[t];
            const float drive = step * seq.u[t];
            const float* b_t = seq.b + t * n_state;
            const float* c_t = seq.c + t * n_state;
            float out = 0.0f;
#pragma omp simd reduction(+ : out)
            for (int n = 0; n < n_state; ++n) {
                const float next = exp_approx(step * seq.a[n]) * hs[n] + drive * b_t[n];
                hs[n] = next;
                out += next * c_t[n];
            }
            y[t] = out;
        }
    }
    apply_skip_and_gate(seq, y);
}

// Recompute the states and scan outputs of block [t0, t1) from its checkpoint into the workspace.
template <int kState>
void recompute_block(const Sequence seq, const float* checkpoint, int64_t t0, int64_t t1, Workspace& work) {
    const int n_state = kState > 0 ? kState : static_cast<int>(seq.state);
    std::memcpy(work.history.data(), checkpoint, n_state * sizeof(float));
    for (int64_t t = t0; t < t1; ++t) {
        const float step = seq.dt[t];
        const float drive = step * seq.u[t];
        const float* b_t = seq.b + t * n_state;
        const float* c_t = seq.c + t * n_state;
        float* prev = work.history.data() + (t - t0) * n_state;
        float* dec = work.decay.data() + (t - t0) * n_state;
        float out = 0.0f;
#pragma omp simd reduction(+ : out)
        for (int n = 0; n < n_state; ++n) {
            const float e = exp_approx(step * seq.a[n]);
            const float next = e * prev[n] + drive * b_t[n];
            dec[n] = e;
            prev[n_state + n] = next;
            out += next * c_t[n];
        }
        work.scan_out[t - t0] = out;
    }
}

// Back through y = (s + D u) silu(z) for the block's steps: dL/ds into the workspace, dz (if gated)
// written, and the block's share of dL/dD returned.
float backward_skip_and_gate(const Sequence seq, const float* dy, float* dz, int64_t t0, int64_t t1,
                             Workspace& work) {
    float* grad_scan = work.grad_scan.data();  // row i: step t0 + i
    const float* scan_out = work.scan_out.data();
    const int64_t steps = t1 - t0;
    if (seq.z == nullptr) {
        std::memcpy(grad_scan, dy + t0, steps * sizeof(float));
    } else {
        const float* z = seq.z + t0;
#pragma omp simd
        for (int64_t i = 0; i < steps; ++i) {
            const float gate_sigmoid = sigmoid(z[i]);
            dz[t0 + i] = dy[t0 + i] * (scan_out[i] + seq.skip * seq.u[t0 + i]) * gate_sigmoid *
                         (1.0f + z[i] * (1.0f - gate_sigmoid));  // silu'(z)
            grad_scan[i] = dy[t0 + i] * z[i] * gate_sigmoid;
        }
    }
    float grad_skip = 0.0f;
#pragma omp simd reduction(+ : grad_skip)
    for (int64_t i = 0; i < steps; ++i) grad_skip += grad_scan[i] * seq.u[t0 + i];
    return grad_skip;
}

// Backward pass of one pair: blocks from last to first, the adjoint g = dL/dh carried across them.
// du, ddt, dz are the pair's rows; dA its row of A and dD its skip weight (both accumulated, dD may
// be null); dB_acc, dC_acc (length, state) are accumulated.
template <int kState>
void backward_pair(const Sequence seq, const float* checkpoints, const float* dy, float* du, float* ddt,
                   float* dz, float* dA, float* dD, float* dB_acc, float* dC_acc, Workspace& work) {
    const int n_state = kState > 0 ? kState : static_cast<int>(seq.state);
    float* g = work.adjoint.data();
    float* dA_b = work.dA_block.data();
    std::fill(work.adjoint.begin(), work.adjoint.end(), 0.0f);
    std::fill(work.dA_total.begin(), work.dA_total.end(), 0.0);
    double grad_skip = 0.0;
    for (int64_t j = seq.blocks() - 1; j >= 0; --j) {
        const int64_t t0 = j * seq.block;
        const int64_t t1 = std::min(seq.length, t0 + seq.block);
        recompute_block<kState>(seq, checkpoints + j * n_state, t0, t1, work);
        grad_skip += backward_skip_and_gate(seq, dy, dz, t0, t1, work);
        std::fill(work.dA_block.begin(), work.dA_block.end(), 0.0f);
        for (int64_t t = t1 - 1; t >= t0; --t) {
            const float step = seq.dt[t];
            const float input = seq.u[t];
            const float drive = step * input;
            const float grad_out = work.grad_scan[t - t0];
            const float* b_t = seq.b + t * n_state;
            const float* c_t = seq.c + t * n_state;
            const float* prev = work.history.data() + (t - t0) * n_state;
            const float* cur = prev + n_state;
            const float* dec = work.decay.data() + (t - t0) * n_state;
            float* dB_t = dB_acc + t * n_state;
            float* dC_t = dC_acc + t * n_state;
            float g_dot_b = 0.0f;
            float da_dot_a = 0.0f;
#pragma omp simd reduction(+ : g_dot_b, da_dot_a)
            for (int n = 0; n < n_state; ++n) {
                const float gn = g[n] + grad_out * c_t[n];  // dL/dh_t
                dC_t[n] += grad_out * cur[n];
                dB_t[n] += gn * drive;
                g_dot_b += gn * b_t[n];
                const float da = gn * dec[n] * prev[n];  // dL/d(dt_t A_n)
                dA_b[n] += da * step;
                da_dot_a += da * seq.a[n];
                g[n] = gn * dec[n];  // dL/dh_{t-1} through h_t
            }
            du[t] = step * g_dot_b + seq.skip * grad_out;
            ddt[t] = da_dot_a + input * g_dot_b;
        }
        // Sum each block in float, the blocks in double: dA and dD add up `length` terms.
        for (int n = 0; n < n_state; ++n) work.dA_total[n] += dA_b[n];
    }
    for (int n = 0; n < n_state; ++n) dA[n] += static_cast<float>(work.dA_total[n]);
    if (dD != nullptr) *dD += static_cast<float>(grad_skip);
}

// The settings every pair shares.
struct Problem {
    const float* u;
    const float* delta;
    const float* bias;  // may be null
    bool use_softplus;
    const float* A;
    const float* Bt;
    const float* Ct;
    const float* D;  // may be null
    const float* z;  // may be null
    int64_t channels;
    int64_t length;
    int64_t state;
    int64_t block;

    float bias_of(int64_t d) const { return bias == nullptr ? 0.0f : bias[d]; }

    // The pair's Sequence, its dt row computed into `steps`.
    Sequence pair(int64_t b, int64_t d, float* steps) const {
        const int64_t row = (b * channels + d) * length;
        const int64_t slab = length * state;
        compute_steps(delta + row, bias_of(d), use_softplus, length, steps);
        return Sequence{u + row,         steps,         z == nullptr ? nullptr : z + row,
                        A + d * state,   Bt + b * slab, Ct + b * slab,
                        D == nullptr ? 0.0f : D[d], length, state, block};
    }
};

}  // namespace

extern "C" {

// y = (scan(u, softplus(delta + bias), A, Bt, Ct) + D u) silu(z); bias, D, z may be null (none), and
// so may checkpoints (no backward pass will follow).
void clinix_scan_forward(const float* u, const float* delta, const float* bias, const float* A, const float* Bt,
                         const float* Ct, const float* D, const float* z, float* y, float* checkpoints,
                         int use_softplus, int64_t batch, int64_t channels, int64_t length, int64_t state,
                         int64_t block, int threads) {
    const Problem problem{u, delta, bias, use_softplus != 0, A, Bt, Ct, D, z, channels, length, state, block};
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> steps(length);
#pragma omp for schedule(dynamic, 8)
        for (int64_t pair = 0; pair < batch * channels; ++pair) {
            const Sequence seq = problem.pair(pair / channels, pair % channels, steps.data());
            float* pair_checkpoints = checkpoints == nullptr ? nullptr : checkpoints + pair * seq.blocks() * state;
            if (state == kMambaState) {
                forward_pair<kMambaState>(seq, y + pair * length, pair_checkpoints);
            } else {
                forward_pair<0>(seq, y + pair * length, pair_checkpoints);
            }
        }
    }
}

// Gradients of sum(dy * y) w.r.t. u, delta, A, Bt, Ct, D, z, bias. dA, dD and dbias must be zero on
// entry; dD, dz and dbias are null when D, z and bias are. dBt and dCt sum over channels: for each
// batch element, every thread accumulates its channels into its own (length, state) buffers, which
// are then added up.
void clinix_scan_backward(const float* u, const float* delta, const float* bias, const float* A, const float* Bt,
                          const float* Ct, const float* D, const float* z, const float* checkpoints, const float* dy,
                          float* du, float* ddelta, float* dA, float* dBt, float* dCt, float* dD, float* dz,
                          float* dbias, int use_softplus, int64_t batch, int64_t channels, int64_t length,
                          int64_t state, int64_t block, int threads) {
    const Problem problem{u, delta, bias, use_softplus != 0, A, Bt, Ct, D, z, channels, length, state, block};
    const int64_t slab = length * state;  // one batch element of Bt, Ct, dBt, dCt
    std::vector<float> partials(static_cast<size_t>(threads) * 2 * slab);
#pragma omp parallel num_threads(threads)
    {
        float* dB_acc = partials.data() + static_cast<int64_t>(thread_id()) * 2 * slab;
        float* dC_acc = dB_acc + slab;
        Workspace work(state, block);
        std::vector<float> steps(length);
        for (int64_t b = 0; b < batch; ++b) {
            std::fill(dB_acc, dB_acc + 2 * slab, 0.0f);
            // Static: each thread always gets the same channels, so the per-thread partial sums, and the
            // gradients, are bit-identical from run to run (exact resume of training depends on it).
#pragma omp for schedule(static)
            for (int64_t d = 0; d < channels; ++d) {
                const Sequence seq = problem.pair(b, d, steps.data());
                const int64_t row = (b * channels + d) * length;
                const float* pair_checkpoints = checkpoints + (b * channels + d) * seq.blocks() * state;
                float* pair_dz = dz == nullptr ? nullptr : dz + row;
                float* pair_dD = dD == nullptr ? nullptr : dD + d;
                if (state == kMambaState) {
                    backward_pair<kMambaState>(seq, pair_checkpoints, dy + row, du + row, ddelta + row, pair_dz,
                                               dA + d * state, pair_dD, dB_acc, dC_acc, work);
                } else {
                    backward_pair<0>(seq, pair_checkpoints, dy + row, du + row, ddelta + row, pair_dz,
                                     dA + d * state, pair_dD, dB_acc, dC_acc, work);
                }
                // backward_pair wrote dL/d(dt); turn it into dL/d(delta).
                const double grad_bias =
                    delta_gradient(delta + row, problem.bias_of(d), problem.use_softplus, length, ddelta + row);
                if (dbias != nullptr) dbias[d] += static_cast<float>(grad_bias);
            }
#pragma omp for schedule(static)
            for (int64_t i = 0; i < slab; ++i) {
                float sum_b = 0.0f;
                float sum_c = 0.0f;
                for (int k = 0; k < threads; ++k) {
                    sum_b += partials[static_cast<int64_t>(k) * 2 * slab + i];
                    sum_c += partials[static_cast<int64_t>(k) * 2 * slab + slab + i];
                }
                dBt[b * slab + i] = sum_b;
                dCt[b * slab + i] = sum_c;
            }
        }
    }
}

}  // extern "C"
