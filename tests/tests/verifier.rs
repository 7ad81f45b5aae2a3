//! Every program passes the verifier; the instruction count each needed is printed.

use mat_loader::Program;
use mat_tests::pins::TestDataplane;

#[test]
fn every_program_passes_the_verifier() {
    let mut dp = TestDataplane::new();
    for p in Program::ALL {
        let insns = dp
            .verified_instructions(p)
            .unwrap_or_else(|e| panic!("{} failed to load: {e:?}", p.name()));
        println!(
            "verifier: {:<18} {:>6} instructions processed",
            p.name(),
            insns.map_or("?".into(), |n| n.to_string())
        );
    }
}
