//! PNG grids.
