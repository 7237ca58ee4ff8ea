pub mod apply;
pub mod nginx;
