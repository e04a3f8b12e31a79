// herd's proof kernels. Written in the common subset of CUDA C and C99 so that the very same
// source runs on the GPU (compiled by NVRTC, with the prelude in src/cuda.rs) and on the CPU
// in tests (compiled by the system's C compiler, with the prelude in tests/kernels_in_c.rs),
// where its output is compared with herd-verify's reference. The prelude defines KERNEL,
// THREAD_ID, THREAD_COUNT, ATOMIC_INC and MULHI64.

typedef unsigned int u32;
typedef unsigned long long u64;

// ---- the chain: C_s = reduce(C_{s-1} · B) --------------------------------------------------

// fp16 bit patterns of -8..=8 (index v + 8): every entry of the chain is exact in fp16.
__constant__ unsigned short HERD_HALF_OF[17] = {
    0xC800, 0xC700, 0xC600, 0xC500, 0xC400, 0xC200, 0xC000, 0xBC00, 0x0000,
    0x3C00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800,
};

// The product (fp32, exact integers: |sum| <= 64·n < 2^24) back to [-8, 8]: the centred
// residue mod 17, written as the next step's fp16 input and as the bytes the leaves hash.
KERNEL void herd_reduce(const float* product, unsigned short* next, signed char* reduced, u64 count) {
    for (u64 i = THREAD_ID; i < count; i += THREAD_COUNT) {
        int v = (int)product[i];
        int r = ((v + 8) % 17 + 17) % 17 - 8;
        next[i] = HERD_HALF_OF[r + 8];
        reduced[i] = (signed char)r;
    }
}

// ---- SHA-256 of a Merkle leaf: 0x00 ‖ checkpoint (LE) ‖ row (LE) ‖ the row's n bytes ---------

__constant__ u32 HERD_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static DEVICE_FN u32 herd_rotr(u32 x, u32 r) { return (x >> r) | (x << (32 - r)); }

static DEVICE_FN void herd_sha256_block(u32 h[8], const u32 w_in[16]) {
    u32 w[64];
    for (int i = 0; i < 16; i++) w[i] = w_in[i];
    for (int i = 16; i < 64; i++) {
        u32 s0 = herd_rotr(w[i - 15], 7) ^ herd_rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        u32 s1 = herd_rotr(w[i - 2], 17) ^ herd_rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    u32 a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        u32 t1 = k + (herd_rotr(e, 6) ^ herd_rotr(e, 11) ^ herd_rotr(e, 25)) + ((e & f) ^ (~e & g)) + HERD_K[i] + w[i];
        u32 t2 = (herd_rotr(a, 2) ^ herd_rotr(a, 13) ^ herd_rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

// Byte `i` of the padded leaf message for a row of n bytes (total = 9 + n bytes before padding).
static DEVICE_FN u32 herd_leaf_byte(const signed char* row, u32 n, u32 checkpoint, u32 index, u64 i, u64 padded) {
    u64 len = 9 + (u64)n;
    if (i == 0) return 0;
    if (i < 5) return (checkpoint >> (8 * (u32)(i - 1))) & 0xff;
    if (i < 9) return (index >> (8 * (u32)(i - 5))) & 0xff;
    if (i < len) return (unsigned char)row[i - 9];
    if (i == len) return 0x80;
    if (i >= padded - 8) return (u32)(((len * 8) >> (8 * (padded - 1 - i))) & 0xff);
    return 0;
}

// One thread per row: leaf hashes of `count` rows of n bytes, rows numbered from first_row.
KERNEL void herd_leaves(const signed char* rows, u32 n, u32 count, u32 checkpoint, u32 first_row, unsigned char* out) {
    for (u64 r = THREAD_ID; r < count; r += THREAD_COUNT) {
        const signed char* row = rows + r * n;
        u32 index = first_row + (u32)r;
        u64 padded = ((9 + (u64)n + 8) / 64 + 1) * 64;
        u32 h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        for (u64 block = 0; block < padded; block += 64) {
            u32 w[16];
            for (int j = 0; j < 16; j++) {
                u64 at = block + 4 * (u64)j;
                w[j] = (herd_leaf_byte(row, n, checkpoint, index, at, padded) << 24)
                     | (herd_leaf_byte(row, n, checkpoint, index, at + 1, padded) << 16)
                     | (herd_leaf_byte(row, n, checkpoint, index, at + 2, padded) << 8)
                     | herd_leaf_byte(row, n, checkpoint, index, at + 3, padded);
            }
            herd_sha256_block(h, w);
        }
        for (int j = 0; j < 8; j++) {
            out[32 * r + 4 * j] = (unsigned char)(h[j] >> 24);
            out[32 * r + 4 * j + 1] = (unsigned char)(h[j] >> 16);
            out[32 * r + 4 * j + 2] = (unsigned char)(h[j] >> 8);
            out[32 * r + 4 * j + 3] = (unsigned char)h[j];
        }
    }
}

// ---- proof of VRAM: herd_verify::vram ------------------------------------------------------

static DEVICE_FN u32 herd_rotl(u32 x, u32 r) { return (x << r) | (x >> (32 - r)); }

#define HERD_QR(s, a, b, c, d)                                         \
    s[a] += s[b]; s[d] = herd_rotl(s[d] ^ s[a], 16);                   \
    s[c] += s[d]; s[b] = herd_rotl(s[b] ^ s[c], 12);                   \
    s[a] += s[b]; s[d] = herd_rotl(s[d] ^ s[a], 8);                    \
    s[c] += s[d]; s[b] = herd_rotl(s[b] ^ s[c], 7);

static DEVICE_FN void herd_double_round(u32 s[16]) {
    HERD_QR(s, 0, 4, 8, 12) HERD_QR(s, 1, 5, 9, 13) HERD_QR(s, 2, 6, 10, 14) HERD_QR(s, 3, 7, 11, 15)
    HERD_QR(s, 0, 5, 10, 15) HERD_QR(s, 1, 6, 11, 12) HERD_QR(s, 2, 7, 8, 13) HERD_QR(s, 3, 4, 9, 14)
}

static DEVICE_FN void herd_initial(u32 s[16], const u32 key[8], u64 counter, u32 domain) {
    s[0] = 0x61707865; s[1] = 0x3320646e; s[2] = 0x79622d32; s[3] = 0x6b206574;
    for (int i = 0; i < 8; i++) s[4 + i] = key[i];
    s[12] = (u32)counter; s[13] = (u32)(counter >> 32); s[14] = domain; s[15] = 0;
}

// Items first..first+count of a dataset, 16 words each, into data (indexed from item 0).
KERNEL void herd_vram_fill(u32* data, const u32* key, u64 first, u64 count, u32 rounds) {
    for (u64 i = THREAD_ID; i < count; i += THREAD_COUNT) {
        u64 index = first + i;
        u32 input[16], s[16];
        herd_initial(input, key, index, 1);
        for (int j = 0; j < 16; j++) s[j] = input[j];
        for (u32 r = 0; r < rounds; r++) herd_double_round(s);
        for (int j = 0; j < 16; j++) data[16 * index + j] = s[j] + input[j];
    }
}

// Walks first..first+count; each winner's number goes to found[] (up to max_found), and
// found_count counts them all.
KERNEL void herd_vram_walk(const u32* data, u64 items, const u32* key, u64 first, u64 count, u32 steps,
                           u64 threshold, u64* found, u32* found_count, u32 max_found) {
    for (u64 i = THREAD_ID; i < count; i += THREAD_COUNT) {
        u64 w = first + i;
        u32 s[16];
        herd_initial(s, key, w, 2);
        herd_double_round(s);
        for (u32 t = 0; t < steps; t++) {
            u64 word = (u64)s[0] | ((u64)s[1] << 32);
            u64 at = MULHI64(word, items);
            const u32* item = data + 16 * at;
            for (int j = 0; j < 16; j++) s[j] ^= item[j];
            herd_double_round(s);
        }
        u64 score = (u64)s[14] | ((u64)s[15] << 32);
        if (score < threshold) {
            u32 slot = ATOMIC_INC(found_count);
            if (slot < max_found) found[slot] = w;
        }
    }
}
