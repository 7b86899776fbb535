//! Flash-time seeding: a generic image plus a node's seed equals the per-node build's seed FAT.

mod common;

use common::Lab;
use nodeforge::fat::{self, FileData};
use nodeforge::partition;
use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

/// Every FAT volume of an image.
/// One FAT volume: (partition number, label, files as (path, bytes)).
type Volume = (u32, String, Vec<(String, Vec<u8>)>);

fn fats(img: &Path) -> Vec<Volume> {
    let mut f = File::open(img).unwrap();
    let layout = partition::read_layout(&mut f, img).unwrap();
    let mut out = Vec::new();
    for p in &layout.partitions {
        if let Ok(v) = fat::read_fat(&f, p.start, p.size) {
            let files = v
                .files
                .into_iter()
                .map(|x| {
                    let FileData::Bytes(b) = x.data else {
                        panic!("read_fat gives bytes")
                    };
                    (x.path, b)
                })
                .collect();
            out.push((p.number, v.label, files));
        }
    }
    out
}

/// Seed a copy of the generic image for `node` (through `flash --node` or the library) and
/// compare it with the per-node build.
fn check(lab: &Lab, node: &str, generic_name: &str, via_flash: bool) {
    let generic = lab
        .dir
        .join(format!("gen/{generic_name}/{generic_name}.img"));
    let per_node = lab.dir.join(format!("out/{node}/{node}.img"));
    let target = lab.dir.join(format!("{node}-stick.img"));
    if via_flash {
        let o = lab.run(&[
            "flash",
            generic.to_str().unwrap(),
            target.to_str().unwrap(),
            "--node",
            node,
            "-c",
            "cluster.toml",
        ]);
        assert!(
            o.status.success(),
            "flash --node: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("seeded"));
    } else {
        fs::copy(&generic, &target).unwrap();
        let cluster = nodeforge::config::load_cluster(Some(&lab.dir.join("cluster.toml"))).unwrap();
        let secrets =
            nodeforge::secrets::Secrets::load(&lab.dir.join("nodeforge-secrets.toml")).unwrap();
        let n = cluster.node(node).unwrap();
        let epoch = nodeforge::pipeline::source_date_epoch().unwrap();
        let r =
            nodeforge::reseed::reseed(&target, &cluster, n, &secrets, epoch).expect("reseeding");
        assert!(!r.partitions.is_empty());
    }

    // The seeded stick's FAT volumes hold exactly the per-node build's files.
    let want = fats(&per_node);
    let got = fats(&target);
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.0, g.0);
        assert_eq!(w.1, g.1, "label of p{}", w.0);
        let wn: Vec<&String> = w.2.iter().map(|x| &x.0).collect();
        let gn: Vec<&String> = g.2.iter().map(|x| &x.0).collect();
        assert_eq!(wn, gn, "file list of p{}", w.0);
        for ((name, wb), (_, gb)) in w.2.iter().zip(&g.2) {
            assert!(
                wb == gb,
                "{name} on p{} differs from the per-node build",
                w.0
            );
        }
    }
    // And the result is a valid filesystem for fsck.vfat.
    let mut f = File::open(&target).unwrap();
    let layout = partition::read_layout(&mut f, &target).unwrap();
    for (num, _, _) in &got {
        let p = layout.by_number(*num).unwrap();
        let part = lab.dir.join(format!("{node}-p{num}.fat"));
        let st = Command::new("dd")
            .arg(format!("if={}", target.display()))
            .arg(format!("of={}", part.display()))
            .args([
                "bs=512",
                &format!("skip={}", p.start / 512),
                &format!("count={}", p.size / 512),
            ])
            .output()
            .unwrap();
        assert!(st.status.success());
        let fsck = Command::new("fsck.vfat")
            .arg("-n")
            .arg(&part)
            .output()
            .expect("fsck.vfat");
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}

#[test]
fn generic_image_plus_flash_time_seed_equals_the_per_node_build() {
    let lab = Lab::new();
    let o = lab.build(&["--all"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = lab.build_to("gen", &["--all", "--generic"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The generic images carry no secrets.
    for s in lab.secrets() {
        for g in ["lab-server-rpi4", "lab-agent-x86_64"] {
            let img = fs::read(lab.dir.join(format!("gen/{g}/{g}.img"))).unwrap();
            assert!(
                !img.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret is in {g}"
            );
        }
    }
    check(&lab, "cp1", "lab-server-rpi4", true);
    check(&lab, "w1", "lab-agent-x86_64", false);

    // A node of another architecture is refused, and the target is left as it was.
    let target = lab.dir.join("wrong.img");
    fs::copy(
        lab.dir.join("gen/lab-agent-x86_64/lab-agent-x86_64.img"),
        &target,
    )
    .unwrap();
    let before = fs::read(&target).unwrap();
    let cluster = nodeforge::config::load_cluster(Some(&lab.dir.join("cluster.toml"))).unwrap();
    let secrets =
        nodeforge::secrets::Secrets::load(&lab.dir.join("nodeforge-secrets.toml")).unwrap();
    let err =
        nodeforge::reseed::reseed(&target, &cluster, cluster.node("cp1").unwrap(), &secrets, 0)
            .unwrap_err();
    assert!(format!("{err:#}").contains("amd64"), "{err:#}");
    assert!(fs::read(&target).unwrap() == before);
}
