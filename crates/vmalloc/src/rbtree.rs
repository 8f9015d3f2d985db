//! An intrusive red-black tree augmented with a per-subtree value.
