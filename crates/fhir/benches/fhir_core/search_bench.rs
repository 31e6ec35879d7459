use criterion::Criterion;

fn placeholder(_c: &mut Criterion) {}

criterion::criterion_group!(benches, placeholder);
