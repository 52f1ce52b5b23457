/* Fused softmax + per-row attention statistics: attnscope's statistics mode on the CPU.
 *
 * One call turns rows of raw scores q.k into probabilities in place and writes, per row, the
 * statistics of attnscope.statistics (entropy, max, argmax, sparsity, effective positions, first-token
 * mass, mean distance, allowed keys). Each row is read four times while it sits in L1 cache (scale and
 * mask, max, exp with the running sums, normalise with the threshold counts), instead of the dozen
 * passes through memory that separate tensor operations make. The identities are the online-softmax
 * ones of flash attention (Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"):
 * with m the row maximum, t = x - m, e = exp(t) and Z = sum e, max p = 1 / Z and
 * entropy = log Z - sum(e t) / Z.
 *
 * Built by attnscope.capture.native with the system C compiler (-O3 -march=native and the IEEE-relaxed
 * subset of -ffast-math, see _FLAGS there; cached per CPU, sha256-checked before loading) and called
 * through ctypes, which releases the GIL, so Python threads run row ranges in parallel.
 * Plain C99, no Python or torch headers.
 */
#include <stdint.h>
#include <string.h>

#define MASKED_SCORE (-1e30f)
#define N_STATS 8
enum { ST_ENTROPY, ST_MAX, ST_ARGMAX, ST_SPARSITY, ST_EFFECTIVE, ST_FIRST, ST_DISTANCE, ST_ALLOWED };

/* exp(t) for t <= 0, 0 for t < -87 (below float's normal range). Cody-Waite reduction
 * t = k ln2 + r and the Cephes expf polynomial for exp(r); relative error below 4e-6 (tested). Written
 * out so the compiler vectorises the loop that calls it. */
static inline float exp_nonpositive(float t)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float tc = t < -87.0f ? -87.0f : t;
    float k = __builtin_rintf(tc * log2e);
    float r = __builtin_fmaf(-k, ln2_lo, __builtin_fmaf(-k, ln2_hi, tc));
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return t < -87.0f ? 0.0f : p * two_k;
}

/* x: a (G * bq, nk) row-major float32 block, G (batch, head) pairs of bq query rows each; row r is
 *    query r % bq of pair r / bq. Rows [r0, r1) are processed: raw scores in, probabilities out (masked
 *    keys exactly 0; a row with no allowed key is all 0).
 * scale: multiplies the raw scores.
 * mask: NULL, or uint8 (nonzero = may attend); row r's keys start at
 *    mask + pair_offset[r / bq] + (r % bq) * mask_row_stride.
 * key_end: NULL, or (bq,): query i may attend only to keys j < key_end[i] (causal masking).
 * rel_pos: (bq,) query i's absolute position minus the absolute position of key column 0.
 * stats: (G * bq, N_STATS) float32, written for rows [r0, r1).
 */
void attnscope_softmax_row_stats(float *restrict x, int64_t r0, int64_t r1, int64_t bq, int64_t nk,
                                 float scale, const uint8_t *restrict mask,
                                 const int64_t *restrict pair_offset, int64_t mask_row_stride,
                                 const int64_t *restrict key_end, const float *restrict rel_pos,
                                 float *restrict stats)
{
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r % bq;
        float *restrict row = x + r * nk;
        float *restrict out = stats + r * N_STATS;
        int64_t end64 = key_end ? key_end[i] : nk;
        const int32_t end = (int32_t)(end64 < 0 ? 0 : (end64 > nk ? nk : end64));  /* int32 loops: AVX2 converts them to float */

        /* pass 1: scale, mask, count the allowed keys */
        int32_t allowed = end;
        if (mask) {
            const uint8_t *restrict mk = mask + pair_offset[r / bq] + i * mask_row_stride;
            int32_t count = 0;
            for (int32_t j = 0; j < end; ++j)
                count += mk[j] != 0;
            allowed = count;
            for (int32_t j = 0; j < end; ++j)
                row[j] = mk[j] ? row[j] * scale : MASKED_SCORE;
        } else {
            for (int32_t j = 0; j < end; ++j)
                row[j] = row[j] * scale;
        }
        for (int64_t j = end; j < nk; ++j)
            row[j] = 0.0f;
        if (allowed == 0) {
            memset(row, 0, (size_t)end * sizeof(float));
            memset(out, 0, N_STATS * sizeof(float));
            continue;
        }

        /* pass 2: row maximum */
        float m = MASKED_SCORE;
        for (int32_t j = 0; j < end; ++j)
            m = row[j] > m ? row[j] : m;

        /* pass 3: e = exp(x - m) in place, Z, sum e t, sum e |i - j|, first index of the maximum */
        const float qp = rel_pos[i];
        float z = 0.0f, et = 0.0f, ed = 0.0f, first_max = (float)nk;
        for (int32_t j = 0; j < end; ++j) {
            float t = row[j] - m;
            float e = exp_nonpositive(t);
            row[j] = e;
            z += e;
            et += e * t;
            float d = qp - (float)j;
            ed += e * (d < 0.0f ? -d : d);
            float at = t == 0.0f ? (float)j : (float)nk;
            first_max = at < first_max ? at : first_max;
        }

        /* pass 4: normalise; count weights below 0.01 and above 0.1 */
        const float inv_z = 1.0f / z;
        float below = 0.0f, above = 0.0f;
        for (int32_t j = 0; j < end; ++j) {
            float p = row[j] * inv_z;
            row[j] = p;
            below += p < 0.01f ? 1.0f : 0.0f;
            above += p > 0.1f ? 1.0f : 0.0f;
        }
        below -= (float)(end - allowed); /* masked keys (p = 0) are not part of the row */

        const float n = (float)allowed;
        out[ST_ENTROPY] = __builtin_logf(z) - et * inv_z;
        out[ST_MAX] = inv_z;
        out[ST_ARGMAX] = first_max;
        out[ST_SPARSITY] = below / n;
        out[ST_EFFECTIVE] = above;
        out[ST_FIRST] = row[0];
        out[ST_DISTANCE] = ed * inv_z;
        out[ST_ALLOWED] = n;
    }
}
