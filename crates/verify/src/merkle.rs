//! A Merkle tree over the rows of one checkpoint matrix. Leaves and inner nodes are hashed
//! with different prefixes (0x00, 0x01) so an inner node can never pass for a leaf, and each
//! leaf names its checkpoint and row so a row cannot be moved to another position.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf(checkpoint: u32, row: u32, values: &[i8]) -> Hash {
    let bytes: Vec<u8> = values.iter().map(|v| *v as u8).collect();
    Sha256::new()
        .chain_update([0u8])
        .chain_update(checkpoint.to_le_bytes())
        .chain_update(row.to_le_bytes())
        .chain_update(&bytes)
        .finalize()
        .into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([1u8]).chain_update(left).chain_update(right).finalize().into()
}

/// Every level of the tree, leaves first. The leaf count must be a power of two.
#[derive(Debug, Clone)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new(leaves: Vec<Hash>) -> Tree {
        assert!(leaves.len().is_power_of_two(), "a tree needs a power-of-two leaf count");
        let mut levels = vec![leaves];
        while levels.last().expect("at least the leaves").len() > 1 {
            let below = levels.last().expect("at least the leaves");
            let above = below.chunks(2).map(|pair| node(&pair[0], &pair[1])).collect();
            levels.push(above);
        }
        Tree { levels }
    }

    pub fn root(&self) -> Hash {
        self.levels.last().expect("at least the leaves")[0]
    }

    /// The sibling hashes from `index`'s leaf up to (not including) the root.
    pub fn proof(&self, index: usize) -> Vec<Hash> {
        let mut index = index;
        let mut path = Vec::with_capacity(self.levels.len() - 1);
        for level in &self.levels[..self.levels.len() - 1] {
            path.push(level[index ^ 1]);
            index /= 2;
        }
        path
    }
}

/// Whether `leaf_hash` sits at `index` under `root`, for a tree of `leaf_count` leaves.
pub fn verify(root: &Hash, leaf_hash: Hash, index: usize, leaf_count: usize, path: &[Hash]) -> bool {
    if !leaf_count.is_power_of_two() || index >= leaf_count || path.len() != leaf_count.trailing_zeros() as usize {
        return false;
    }
    let mut hash = leaf_hash;
    let mut index = index;
    for sibling in path {
        hash = if index % 2 == 0 { node(&hash, sibling) } else { node(sibling, &hash) };
        index /= 2;
    }
    &hash == root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u32) -> (Tree, Vec<Hash>) {
        let leaves: Vec<Hash> = (0..n).map(|i| leaf(1, i, &[i as i8; 4])).collect();
        (Tree::new(leaves.clone()), leaves)
    }

    #[test]
    fn every_leaf_proves_its_place_and_no_other() {
        let (tree, leaves) = tree(16);
        for (i, hash) in leaves.iter().enumerate() {
            let path = tree.proof(i);
            assert!(verify(&tree.root(), *hash, i, 16, &path));
            assert!(!verify(&tree.root(), *hash, (i + 1) % 16, 16, &path), "a leaf cannot move");
            assert!(!verify(&tree.root(), leaf(1, i as u32, &[99; 4]), i, 16, &path), "nor change");
            assert!(!verify(&tree.root(), *hash, i, 16, &path[1..]), "a short path fails");
        }
    }

    #[test]
    fn leaves_bind_their_checkpoint_and_row() {
        assert_ne!(leaf(1, 2, &[3]), leaf(2, 2, &[3]));
        assert_ne!(leaf(1, 2, &[3]), leaf(1, 3, &[3]));
    }

    #[test]
    fn a_single_leaf_is_its_own_root() {
        let (tree, leaves) = tree(1);
        assert_eq!(tree.root(), leaves[0]);
        assert!(verify(&tree.root(), leaves[0], 0, 1, &[]));
    }
}
