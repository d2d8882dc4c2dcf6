pub fn x() {}
pub mod sim;
