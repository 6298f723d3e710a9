//! The code base itself: the floors of src/ (docs/architecture.md), no machine paths, string
//! literals, the container recipe.

mod container_recipe;
mod layers;
mod no_machine_paths;
mod string_literals;
