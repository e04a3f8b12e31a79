//! The CUDA kernels' source, compiled for the CPU by the system's C compiler (it is written
//! in the common subset of CUDA C and C99) and run against herd-verify's reference: the
//! reduction, the Merkle leaf hash, the VRAM fill and the VRAM walk compute what the
//! verifier checks, byte for byte.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use herd_verify::merkle::leaf;
use herd_verify::vram::{dataset_key, item, walk, walk_key, wins, VramParams};

const PRELUDE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#define KERNEL static
#define DEVICE_FN
#define __constant__ static const
#define THREAD_ID 0
#define THREAD_COUNT 1
#define ATOMIC_INC(p) ((*(p))++)
#define MULHI64(a, b) ((u64)(((unsigned __int128)(a) * (unsigned __int128)(b)) >> 64))
"#;

const HARNESS: &str = r#"
static void in(void* p, size_t n) { if (fread(p, 1, n, stdin) != n) { fprintf(stderr, "short input\n"); exit(2); } }
static void out(const void* p, size_t n) { fwrite(p, 1, n, stdout); }
int main(int argc, char** argv) {
    char mode = argv[1][0];
    if (mode == 'r') {
        u64 count; in(&count, 8);
        float* p = malloc(4 * count); unsigned short* h = malloc(2 * count); signed char* r = malloc(count);
        in(p, 4 * count);
        herd_reduce(p, h, r, count);
        out(h, 2 * count); out(r, count);
    } else if (mode == 'l') {
        u32 a[4]; in(a, 16);
        signed char* rows = malloc((size_t)a[0] * a[1]); unsigned char* h = malloc(32 * (size_t)a[1]);
        in(rows, (size_t)a[0] * a[1]);
        herd_leaves(rows, a[0], a[1], a[2], a[3], h);
        out(h, 32 * (size_t)a[1]);
    } else if (mode == 'f') {
        u32 key[8]; u64 first, count; u32 rounds;
        in(key, 32); in(&first, 8); in(&count, 8); in(&rounds, 4);
        u32* data = calloc(16 * (first + count), 4);
        herd_vram_fill(data, key, first, count, rounds);
        out(data + 16 * first, 64 * count);
    } else if (mode == 'w') {
        u64 items; in(&items, 8);
        u32* data = malloc(64 * items); in(data, 64 * items);
        u32 key[8]; u64 first, count, threshold; u32 steps, max_found;
        in(key, 32); in(&first, 8); in(&count, 8); in(&steps, 4); in(&threshold, 8); in(&max_found, 4);
        u64* found = calloc(max_found, 8); u32 found_count = 0;
        herd_vram_walk(data, items, key, first, count, steps, threshold, found, &found_count, max_found);
        out(&found_count, 4); out(found, 8 * (size_t)max_found);
    }
    return 0;
}
"#;

/// The kernels as a CPU program, built once per test run.
fn program() -> &'static PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let source = dir.join("kernels.c");
        std::fs::write(&source, format!("{PRELUDE}\n{}\n{HARNESS}", herd_gpu::KERNELS)).unwrap();
        let binary = dir.join("kernels");
        let status = Command::new("cc")
            .args(["-std=gnu99", "-O2", "-Wall", "-Werror", "-Wno-unused-function", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .expect("a C compiler (cc) is needed to test the CUDA kernels on the CPU");
        assert!(status.success(), "kernels.cu does not compile as C");
        binary
    })
}

fn run(mode: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program()).arg(mode).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    output.stdout
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn the_reduce_kernel_centres_residues_and_writes_exact_fp16() {
    let values: Vec<f32> =
        (-300_000..300_000).step_by(997).map(|v| v as f32).chain([0.0, 8.0, 9.0, -9.0, 262_144.0]).collect();
    let mut input = (values.len() as u64).to_le_bytes().to_vec();
    input.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    let output = run("r", &input);
    let (halves, reduced) = output.split_at(2 * values.len());
    for (i, v) in values.iter().enumerate() {
        let r = reduced[i] as i8;
        let mut expected = [0i8];
        herd_verify::chain::reduce_row(&[*v as i32], &mut expected);
        assert_eq!(r, expected[0], "{v}");
        let bits = u16::from_le_bytes([halves[2 * i], halves[2 * i + 1]]);
        assert_eq!(herd_gpu::half::decode(bits), f32::from(r), "{v}");
    }
}

#[test]
fn the_leaf_kernel_is_herds_merkle_leaf() {
    for n in [64u32, 256, 4096] {
        let count = 5u32;
        let rows: Vec<i8> = (0..n * count).map(|i| ((i * 7 % 17) as i8) - 8).collect();
        let mut input: Vec<u8> = [n, count, 42, 1000].iter().flat_map(|v| v.to_le_bytes()).collect();
        input.extend(rows.iter().map(|v| *v as u8));
        let output = run("l", &input);
        for r in 0..count as usize {
            let expected = leaf(42, 1000 + r as u32, &rows[r * n as usize..(r + 1) * n as usize]);
            assert_eq!(&output[32 * r..32 * (r + 1)], &expected, "n = {n}, row {r}");
        }
    }
}

#[test]
fn the_fill_kernel_makes_the_verifiers_items() {
    let key = dataset_key(&[9; 32], 3);
    let (first, count, rounds) = (1_000u64, 64u64, 512u32);
    let mut input: Vec<u8> = key.iter().flat_map(|w| w.to_le_bytes()).collect();
    input.extend(first.to_le_bytes());
    input.extend(count.to_le_bytes());
    input.extend(rounds.to_le_bytes());
    let output = words(&run("f", &input));
    for i in 0..count {
        assert_eq!(
            &output[16 * i as usize..16 * (i as usize + 1)],
            &item(&key, first + i, rounds),
            "item {}",
            first + i
        );
    }
}

#[test]
fn the_walk_kernel_finds_the_walks_the_verifier_accepts() {
    let params = VramParams { gpus: 1, items: 3000, rounds: 8, steps: 32, difficulty: 16, wins: 8 };
    let (seed, nonce) = ([4; 32], [6; 32]);
    let data_key = dataset_key(&seed, 0);
    let items: Vec<[u32; 16]> = (0..params.items).map(|i| item(&data_key, i, params.rounds)).collect();
    let key = walk_key(&seed, &nonce, 0);
    let count = 512u64;
    let mut input = params.items.to_le_bytes().to_vec();
    input.extend(items.iter().flatten().flat_map(|w| w.to_le_bytes()));
    input.extend(key.iter().flat_map(|w| w.to_le_bytes()));
    input.extend(0u64.to_le_bytes());
    input.extend(count.to_le_bytes());
    input.extend(params.steps.to_le_bytes());
    input.extend(params.threshold().to_le_bytes());
    input.extend(64u32.to_le_bytes());
    let output = run("w", &input);
    let found_count = u32::from_le_bytes(output[..4].try_into().unwrap());
    let found: Vec<u64> = output[4..]
        .chunks_exact(8)
        .take(found_count as usize)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let expected: Vec<u64> =
        (0..count).filter(|w| wins(&walk(&key, *w, &params, |i| items[i as usize]), &params)).collect();
    assert!(expected.len() > 10, "the test's difficulty gives some wins: {}", expected.len());
    assert_eq!(found, expected);
}
