//! The verifier against malformed answers (the commitment and opening parsers' other half):
//! an honest answer with random structural edits — lengths, values, picks, paths, roots —
//! is refused with a typed `Failure` or, untouched, passes; it never panics.

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use herd_verify::{challenge_seed, check, choose, solve, Opening, Params, Pick};
use proptest::prelude::*;

const DEVICE: &str = "device-f";
const NONCE: &[u8] = b"nonce-f";
const PARAMS: Params = Params { n: 32, rows: 32, steps: 4, stride: 2, openings: 8 };
const SECRET: [u8; 32] = [7; 32];

struct Honest {
    roots: Vec<[u8; 32]>,
    picks: Vec<Pick>,
    openings: Vec<Opening>,
}

fn honest() -> &'static Honest {
    static HONEST: OnceLock<Honest> = OnceLock::new();
    HONEST.get_or_init(|| {
        let solution = solve(&challenge_seed(DEVICE, NONCE), &PARAMS, 1, &AtomicBool::new(false)).unwrap();
        let picks = choose(&PARAMS, &SECRET);
        let openings = picks.iter().map(|p| solution.open(*p)).collect();
        Honest { roots: solution.roots.clone(), picks, openings }
    })
}

#[derive(Debug, Clone)]
enum Edit {
    DropRoot,
    ExtraRoot,
    DropOpening,
    Pick(usize, u32, u32),
    Start(usize, Option<Vec<i8>>),
    Link(usize, usize, Vec<i32>),
    DropLink(usize),
    StartPath(usize, usize),
    EndPath(usize, Vec<[u8; 32]>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::DropRoot),
        Just(Edit::ExtraRoot),
        Just(Edit::DropOpening),
        (any::<usize>(), any::<u32>(), any::<u32>()).prop_map(|(i, c, r)| Edit::Pick(i, c, r)),
        (any::<usize>(), prop::option::of(prop::collection::vec(any::<i8>(), 0..40)))
            .prop_map(|(i, s)| Edit::Start(i, s)),
        (any::<usize>(), any::<usize>(), prop::collection::vec(any::<i32>(), 0..40))
            .prop_map(|(i, j, l)| Edit::Link(i, j, l)),
        any::<usize>().prop_map(Edit::DropLink),
        (any::<usize>(), 0usize..12).prop_map(|(i, n)| Edit::StartPath(i, n)),
        (any::<usize>(), prop::collection::vec(any::<[u8; 32]>(), 0..10)).prop_map(|(i, p)| Edit::EndPath(i, p)),
    ]
}

fn apply(edit: &Edit, roots: &mut Vec<[u8; 32]>, openings: &mut Vec<Opening>) {
    let count = openings.len().max(1);
    match edit.clone() {
        Edit::DropRoot => drop(roots.pop()),
        Edit::ExtraRoot => roots.push([1; 32]),
        Edit::DropOpening => drop(openings.pop()),
        Edit::Pick(i, checkpoint, row) => {
            if let Some(o) = openings.get_mut(i % count) {
                o.pick = Pick { checkpoint: checkpoint % 6, row: row % 40 };
            }
        }
        Edit::Start(i, start) => {
            if let Some(o) = openings.get_mut(i % count) {
                o.start = start;
            }
        }
        Edit::Link(i, j, link) => {
            if let Some(o) = openings.get_mut(i % count) {
                let at = j % (o.links.len() + 1);
                if at < o.links.len() {
                    o.links[at] = link;
                } else {
                    o.links.push(link);
                }
            }
        }
        Edit::DropLink(i) => {
            if let Some(o) = openings.get_mut(i % count) {
                o.links.pop();
            }
        }
        Edit::StartPath(i, length) => {
            if let Some(o) = openings.get_mut(i % count) {
                o.start_path.resize(length, [9; 32]);
            }
        }
        Edit::EndPath(i, path) => {
            if let Some(o) = openings.get_mut(i % count) {
                o.end_path = path;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn edited_answers_are_refused_with_a_typed_failure(edits in prop::collection::vec(edit(), 1..5)) {
        let honest = honest();
        let (mut roots, mut openings) = (honest.roots.clone(), honest.openings.clone());
        for edit in &edits {
            apply(edit, &mut roots, &mut openings);
        }
        let result = check(DEVICE, NONCE, &PARAMS, &roots, &honest.picks, &openings, &SECRET);
        if roots != honest.roots || openings != honest.openings {
            prop_assert!(result.is_err(), "an edited answer passed: {edits:?}");
        } else {
            prop_assert!(result.is_ok());
        }
    }
}
