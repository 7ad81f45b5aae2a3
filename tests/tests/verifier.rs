//! Every program passes the verifier within a budget of its own; the instruction count each
//! needed is printed. A change that blows a budget is seen here, in review, not on a kernel
//! with a smaller limit. The budgets leave about a third of headroom over what was measured.

use mat_loader::Program;
use mat_tests::pins::TestDataplane;

/// Instructions the verifier may process per program (the kernel's own limit is 1,000,000).
fn budget(p: Program) -> u32 {
    match p {
        Program::PortFromVm | Program::PortFromVmXdp => 260_000,
        Program::UplinkOut => 70_000,
        Program::PortToVm | Program::UplinkIn => 35_000,
        Program::FloorTc | Program::FloorXdp => 10,
    }
}

#[test]
fn every_program_passes_the_verifier_within_its_budget() {
    let mut dp = TestDataplane::new();
    for p in Program::ALL {
        let insns = dp
            .verified_instructions(p)
            .unwrap_or_else(|e| panic!("{} failed to load: {e:?}", p.name()))
            .expect("this kernel reports verified instructions");
        println!(
            "verifier: {:<18} {insns:>7} instructions processed (budget {})",
            p.name(),
            budget(p)
        );
        assert!(
            insns <= budget(p),
            "{} took {insns} verifier instructions, over its budget of {}",
            p.name(),
            budget(p)
        );
    }
}
