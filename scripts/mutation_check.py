"""Apply deliberate bugs to a copy of the repository and check that the tests guarding each one fail.

Usage: .venv/bin/python scripts/mutation_check.py [--only NAME ...] [--python PATH] [--jobs N]
                                                  [--no-baseline] [--skip-training]

For each mutation: copy the working tree (git's tracked and untracked-but-not-ignored files) to a
temporary folder, replace one snippet of one file, run the named tests there with `-x`, and print
one table row. A mutation the tests do not catch ("MISSED") makes the exit code 1. The snippet must
occur exactly once in the file, so a refactor that moves it fails loudly instead of testing nothing.
`--jobs N` (default: the CPU count) runs N mutants at once, each in its own copy and process, with
the CPU's threads shared out between them (OMP_NUM_THREADS); rows print in the table's order.
First the named tests run on an unmutated copy (the baseline: a mutant is judged only by tests
that pass without it); `--no-baseline` leaves that run out for a caller that has just seen the
whole suite pass on this tree (`.ci/run` after `make test`). `--skip-training` leaves out the
mutations whose tests train digits runs (`trains=True`: 1-6 min each on a slow 2-core machine,
against 19-46 s for the others); `.ci/run` passes it to stay inside CI's time, and a session that
changes what those tests guard runs them with `--only`.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]


class Mutation(NamedTuple):
    name: str
    path: str
    old: str
    new: str
    tests: Tuple[str, ...]
    trains: bool = False  # its tests train digits runs: minutes each on 2 cores, not seconds


MUTATIONS = (
    Mutation("Eq. 3 robust term with its sign flipped", "solo_ncp/ncp/losses.py",
             '"loss": distill + lam * robust', '"loss": distill - lam * robust',
             ("tests/test_stage2_oracles.py",)),
    Mutation("lambda ignored", "solo_ncp/ncp/losses.py",
             '"loss": distill + lam * robust', '"loss": distill + robust',
             ("tests/test_stage2_oracles.py",)),
    Mutation("f2(x_adv) compared with the teacher instead of f2(x)", "solo_ncp/ncp/losses.py",
             "robust = neg_cosine(student_adv, student_clean).mean()",
             "robust = neg_cosine(student_adv, teacher.detach()).mean()",
             ("tests/test_stage2_oracles.py",)),
    Mutation("BN branches swapped in the loss", "solo_ncp/ncp/step.py",
             'with bn_branch(student, "clean"):\n        clean = student(x)\n'
             '    with bn_branch(student, "adv"):\n        adv = student(x_adv)',
             'with bn_branch(student, "adv"):\n        clean = student(x)\n'
             '    with bn_branch(student, "clean"):\n        adv = student(x_adv)',
             ("tests/test_stage2_oracles.py",)),
    Mutation("single BN: clean and adversarial batches in two forwards", "solo_ncp/ncp/step.py",
             "return student(torch.cat([x, x_adv])).split(len(x))",
             "return student(x), student(x_adv)",
             ("tests/test_stage2_oracles.py",)),
    Mutation("Eq. 4 toward the own cluster", "solo_ncp/attacks/objectives.py",
             "away_from_own = -F.cosine_similarity(features, own_centroids, dim=1)",
             "away_from_own = F.cosine_similarity(features, own_centroids, dim=1)",
             ("tests/test_attacks.py",)),
    Mutation("AutoAttack scored on the clean images", "solo_ncp/eval/autoattack.py",
             "(_predictions(classifier, x_adv, batch_size) == y)",
             "(_predictions(classifier, x, batch_size) == y)",
             ("tests/test_eval_robust.py",)),
    Mutation("atomic_write writes its target directly", "solo_ncp/io.py",
             "write(tmp)\n        _sync(tmp)\n        with signals_held(finished_where([path])) if result else nullcontext():\n"
             "            os.replace(tmp, path)", "write(str(path))\n        with nullcontext():\n            pass",
             ("tests/test_io.py",)),
    Mutation("atomic_write renames data that may not be on the disk yet", "solo_ncp/io.py",
             "        _sync(tmp)\n", "", ("tests/test_io.py",)),
    Mutation("torch.save's error on a full disk passes as a RuntimeError", "solo_ncp/io.py",
             "                or isinstance(err, RuntimeError) and shutil.disk_usage(path.parent).free < FULL_BELOW)",
             "                )", ("tests/test_disk_full.py",)),
    Mutation("a training's full disk is reported as the error raised over it", "solo_ncp/io.py",
             "    ours = [seen for seen in full if isinstance(seen, DiskFullError)]",
             "    ours = [seen for seen in full[:1] if isinstance(seen, DiskFullError)]", ("tests/test_disk_full.py",)),
    Mutation("a step whose result cannot be read back counts as done", "solo_ncp/launch/steps.py",
             "        if read is not None:\n", "        if False:\n", ("tests/test_damaged_files.py",)),
    Mutation("reproduce restarts an interrupted training instead of resuming it",
             "solo_ncp/launch/steps.py",
             'argv += ["--resume"] if (self.folder / "last.ckpt").is_file() else []', "argv += []",
             ("tests/test_reproduce.py::test_killed_mid_training_the_rerun_finishes_only_what_was_left",),
             trains=True),
    Mutation("a signal whose raise was swallowed is forgotten", "solo_ncp/interrupt.py",
             "    if _pending is not None:\n        raise Interrupted(_pending, where=where)", "    return",
             ("tests/test_interrupt.py::test_any_other_command_interrupted_is_one_line",)),
    Mutation("a signal after a command wrote its results says it stopped before writing them", "solo_ncp/cli.py",
             "        if written:\n            interrupted.where = finished_where(written)\n        elif command",
             "        if command",
             ("tests/test_interrupt.py::test_a_signal_after_the_results_are_written_says_so",)),
    Mutation("a failed step's error line is lost with its log", "solo_ncp/launch/steps.py",
             "{last_error(output.tail_text())}", "{last_error(output.tail_text()[:0])}",
             ("tests/test_steps.py::test_a_step_whose_log_cannot_be_written_still_reports_its_error_line",)),
    Mutation("a signal's raise that C code turned into an error is reported as that error", "solo_ncp/interrupt.py",
             "    return None if _pending is None else Interrupted(_pending)", "    return None",
             ("tests/test_interrupt.py::test_any_other_command_interrupted_is_one_line",)),
    Mutation("a training's signal that C code turned into an error ends as that error", "solo_ncp/launch/trainer.py",
             "        interrupted = interruption(err)\n",
             "        interrupted = as_interrupted(err) if isinstance(err, KeyboardInterrupt) else None\n",
             ("tests/test_interrupt.py::test_a_training_whose_interrupt_was_swallowed_still_stops_in_that_epoch",),
             trains=True),
    Mutation("a training does not raise a swallowed signal again", "solo_ncp/launch/trainer.py",
             'LearningRateMonitor("epoch"), PendingInterrupt(),', 'LearningRateMonitor("epoch"),',
             ("tests/test_interrupt.py::test_a_training_whose_interrupt_was_swallowed_still_stops_in_that_epoch",),
             trains=True),
    Mutation("PGD's random start reseeded per test batch", "solo_ncp/eval/robust.py",
             "steps=steps, generator=generator, norm=norm)",
             "steps=steps, generator=torch.Generator().manual_seed(seed), norm=norm)",
             ("tests/test_eval_robust.py::test_pgd_results_do_not_depend_on_the_batch_split",)),
    Mutation("a speed switch taking any value", "solo_ncp/methods/stage2_options.py",
             "    if not fits:", "    if not fits and o.type is not bool:",
             ("tests/test_step_switches.py::test_a_switch_that_is_not_a_boolean_is_one_error_line",),
             trains=True),
    Mutation("memory-bank rows under the wrong sample indices", "solo_ncp/methods/stage2_hooks.py",
             "self.bank[indexes] = features", "self.bank[indexes.flip(0)] = features",
             ("tests/test_ncp.py::test_memory_bank_rows_are_the_steps_features_of_the_same_samples",),
             trains=True),
    Mutation("config keys nothing reads accepted", "solo_ncp/config/schema.py",
             "raise unread_key_error(\".\".join(path), list(known), reader)", "continue",
             ("tests/test_overrides.py::test_a_key_nothing_reads_is_refused_naming_the_closest_read_key",
              "tests/test_config.py::test_a_file_key_nothing_reads_is_refused")),
    Mutation("clustering features placed in loader order, not at their indices (no DDP)",
             "solo_ncp/ncp/clustering.py", "out[indices] = rows", "out[: len(rows)] = rows",
             ("tests/test_ncp.py::test_encoding_indices_out_of_order_returns_each_index_its_own_row",)),
    Mutation("clustering pass over a shuffled loader", "solo_ncp/methods/stage2_hooks.py",
             "shuffle=False,", "shuffle=True,",
             ("tests/test_ncp.py::test_full_pass_features_are_in_dataset_order",)),
    Mutation("memory bank's missing rows filled out of order", "solo_ncp/methods/stage2_hooks.py",
             "features[missing] = self._encode(missing.cpu())",
             "features[missing] = self._encode(missing.cpu()).flip(0)",
             ("tests/test_ncp.py::test_memory_bank_keeps_seen_rows_and_encodes_the_missing_ones_in_their_rows",)),
    Mutation("report column over different test images accepted", "solo_ncp/eval/report.py",
             "    if len(counts) > 1:\n", "    if len(counts) > 2:\n",
             ("tests/test_eval.py::test_a_column_over_different_test_images_is_refused",)),
    Mutation("report tables not split by head", "solo_ncp/eval/report.py",
             "sections += _head_tables([run for run in runs if run.head == head], head)",
             "sections += _head_tables([run for run in runs], head)",
             ("tests/test_eval.py::test_each_head_gets_its_own_tables_the_papers_under_the_papers_titles",)),
    Mutation("report mean weighted by test images (Table 1)", "solo_ncp/eval/report.py",
             "values = [record[row][metric] for record in records if _measured(record)]",
             "values = [record[row][metric] * record['n_correct'] * len(records)\n"
             "              / sum(q['n_correct'] for q in records) for record in records if _measured(record)]",
             ("tests/test_eval.py::test_poc_table_cells_are_the_mean_over_seeds_not_over_test_images",)),
    Mutation("PoC random noise of the PGD step size, not eps", "solo_ncp/eval/poc.py",
             '"random_noise": pgd(toward_nbr, x, eps=eps,', '"random_noise": pgd(toward_nbr, x, eps=alpha,',
             ("tests/test_eval.py::test_poc_random_noise_fills_the_linf_ball_uniformly",)),
    Mutation("PoC success rate over all test images", "solo_ncp/eval/poc.py",
             "**{key: tally.summary() for key, tally in rows.items()},",
             '**{key: {**tally.summary(), "attack_success": 100.0 * tally.flipped / total}\n'
             "           for key, tally in rows.items()},",
             ("tests/test_eval.py::test_poc_rates_are_over_the_correctly_classified_images",)),
    Mutation("eval's head and its statistics fitted on the test split", "solo_ncp/commands/eval.py",
             "tuned = fine_tune(encoder.model, train_set,", "tuned = fine_tune(encoder.model, test_set,",
             ("tests/test_eval_head.py::test_head_statistics_come_from_the_training_split[eval-standardized]",),
             trains=True),
    Mutation("poc's head and its statistics fitted on the test split", "solo_ncp/commands/poc.py",
             "head, head_cfg = train_head(args, encoder, spec, train_set)",
             "head, head_cfg = train_head(args, encoder, spec, test_set)",
             ("tests/test_eval_head.py::test_head_statistics_come_from_the_training_split[poc-whitened]",),
             trains=True),
    Mutation("the checkpoint reader catching only the parser errors it caught before issue 24",
             "solo_ncp/models/checkpoint.py",
             "UNREADABLE = (\n    EOFError, LookupError, struct.error, ValueError, TypeError, AttributeError, "
             "AssertionError,\n    RuntimeError, OSError, ImportError, ArithmeticError,\n)",
             "UNREADABLE = (RuntimeError, EOFError, OSError)",
             ("tests/test_checkpoint_files.py::test_a_text_file_of_any_first_byte_is_one_checkpoint_error",)),
    Mutation("any refused global taken for an unsafe pickle", "solo_ncp/models/checkpoint.py",
             "return bool(named) and _may_name_an_object(named[1]), reason", "return True, reason",
             ("tests/test_checkpoint_files.py",)),
    Mutation("a Fashion-MNIST file of the wrong size read as far as it goes", "solo_ncp/data/datasets.py",
             "if len(data) < header or len(data) != header + math.prod(shape):", "if len(data) < header:",
             ("tests/test_data.py::test_a_malformed_fashion_mnist_file_is_one_error_naming_it_and_the_fix",)),
    Mutation("the lr schedule not rebuilt on --resume", "solo_ncp/launch/trainer.py",
             "resumed_schedule = [ResumedSchedule()] if run.resume_from else []",
             "resumed_schedule = []",
             ("tests/test_resume.py::test_a_resume_trains_on_the_cosine_of_its_config",)),
    Mutation("import solo_ncp imports solo-learn to register at once", "solo_ncp/__init__.py",
             "register_with_solo_learn()\n", "import solo_ncp.methods\n",
             ("tests/test_startup.py::test_help_and_version_import_no_framework",)),
    Mutation("solo-learn imported after solo_ncp gets no methods", "solo_ncp/_registration.py",
             "self.loader\n        importlib.import_module(REGISTRAR)", "self.loader",
             ("tests/test_startup.py::test_import_solo_ncp_registers_its_methods",)),
    Mutation("the step marker written on exit code 0 alone", "solo_ncp/launch/steps.py",
             "missing = self.missing()\n", "missing = None\n",
             ("tests/test_reproduce.py::test_a_training_step_is_marked_done_only_at_its_last_epoch",)),
    Mutation("solo_learn.ckpt under main's prefix only", "solo_ncp/models/export.py",
             'SOLO_LEARN_PREFIXES = ("encoder.", "backbone.")', 'SOLO_LEARN_PREFIXES = ("backbone.",)',
             ("tests/test_export.py::test_solo_learn_main_linear_loads_every_tensor",),
             trains=True),
    Mutation("solo_learn.ckpt's backbone. keys before its encoder. keys", "solo_ncp/models/export.py",
             'SOLO_LEARN_PREFIXES = ("encoder.", "backbone.")', 'SOLO_LEARN_PREFIXES = ("backbone.", "encoder.")',
             ("tests/test_export.py::test_solo_learn_main_linear_loads_every_tensor",),
             trains=True),
    Mutation("model_info.json with RobustBench's venue null", "solo_ncp/models/export.py",
             '"venue": UNPUBLISHED,', '"venue": None,',
             ("tests/test_export.py::test_model_info_loads_in_robustbenchs_model_info_and_bibtex_helper",),
             trains=True),
    Mutation("L2 PGD steps along sign(grad)", "solo_ncp/attacks/pgd.py",
             "return grad / (_l2_norms(grad) + DIVISION_EPS)", "return grad.sign()",
             ("tests/test_attacks_l2.py",)),
    Mutation("AutoAttack always in the L-inf ball", "solo_ncp/eval/autoattack.py",
             "norm=norm,", 'norm="Linf",',
             ("tests/test_eval_l2.py::test_autoattack_ran_in_the_l2_ball",),
             trains=True),
    Mutation("stage 2 ignores method_kwargs.norm", "solo_ncp/methods/stage2_hooks.py",
             'norm=options["norm"], ', "",
             ("tests/test_eval_l2.py::test_stage2_norm_reaches_its_pgd",),
             trains=True),
    Mutation("online classifier on raw features", "solo_ncp/models/normalize.py",
             "return F.normalize(features - features.mean(dim=1, keepdim=True), dim=1)", "return features",
             ("tests/test_monitors.py::test_the_online_classifier_stays_near_chance_at_the_configs_lr",),
             trains=True),
    Mutation("reproduce's own lock removed", "solo_ncp/commands/reproduce.py",
             "else folder_lock(out):", "else nullcontext():",
             ("tests/test_reproduce.py::test_a_second_reproduce_on_the_same_out_is_refused",)),
    Mutation("reproduce's pass-through options checked only when their step runs",
             "solo_ncp/commands/reproduce.py",
             "        check_step_arguments(plan.steps, plan.num_classes, plan.training_images)\n", "",
             ("tests/test_reproduce.py::test_an_option_a_step_would_refuse_stops_reproduce_before_any_step",)),
    Mutation("reproduce's stage-2 options checked only when stage 2 trains", "solo_ncp/launch/reproduce.py",
             "    if label != STAGE1:\n        check_stage2_augmentation(cfg)\n        check_stage2_options(cfg)\n", "",
             ("tests/test_reproduce.py::test_a_config_the_training_would_refuse_stops_reproduce_before_stage1",)),
    Mutation("best.ckpt replaced by a tied epoch", "solo_ncp/launch/callbacks.py",
             'measured["ra"] <= self.kept["pgd20_acc"]', 'measured["ra"] < self.kept["pgd20_acc"]',
             ("tests/test_best_checkpoint.py::test_best_ckpt_holds_the_epoch_of_the_best_held_out_accuracy_across_a_resume",),
             trains=True),
    Mutation("the best so far forgotten on --resume", "solo_ncp/launch/callbacks.py",
             'self.kept = state_dict.get("kept")', "self.kept = None",
             ("tests/test_best_checkpoint.py::test_best_ckpt_holds_the_epoch_of_the_best_held_out_accuracy_across_a_resume",),
             trains=True),
    Mutation("a signal swallowed while a step's process starts lets reproduce run on", "solo_ncp/launch/steps.py",
             "        raise_pending()\n        return process.wait()", "        return process.wait()",
             ("tests/test_steps.py",)),
    Mutation("a done step whose input changed skipped as done", "solo_ncp/launch/steps.py",
             'return "stale" if self.changed_inputs(recorded) else "done"', 'return "done"',
             ("tests/test_steps.py",)),
    Mutation("reproduce's overrides compared sorted, not by what takes effect", "solo_ncp/launch/reproduce.py",
             "    return sorted(last.values())", "    return sorted(overrides)",
             ("tests/test_reproduce.py::test_overrides_are_compared_by_what_takes_effect",)),
    Mutation("the held-out images trained on", "solo_ncp/commands/train.py",
             "train_set, cluster_set = Subset(train_set, trained), Subset(cluster_set, trained)",
             "train_set, cluster_set = train_set, cluster_set",
             ("tests/test_best_checkpoint.py::test_the_monitor_scores_images_that_are_neither_trained_on_nor_clustered",),
             trains=True),
    Mutation("a stage-2 crop size of another size than the images accepted", "solo_ncp/config/settings.py",
             "crop is not None and int(crop) != spec.image_size", "crop is not None and int(crop) > 10 ** 6",
             ("tests/test_stage2_crop.py",)),
    Mutation("an option solo-learn's method cannot do without deleted", "solo_ncp/config/schema.py",
             "p.name in own and p.default is inspect.Parameter.empty", "False",
             ("tests/test_overrides.py",)),
    Mutation("an override of a solo-learn option of another kind passed on", "solo_ncp/config/loading.py",
             "    check_option_kinds(file_values, cfg)  # first: an override's error names the file's value\n", "",
             ("tests/test_overrides.py",)),
    Mutation("a resumed stage 2 whose teacher file changed goes on", "solo_ncp/methods/stage2_hooks.py",
             'if recorded and recorded != self.teacher_file["sha256"]:', "if False:",
             ("tests/test_resume.py::test_resuming_stage_2_from_a_changed_teacher_file_is_refused",),
             trains=True),
    Mutation("a command writes into another command's --out", "solo_ncp/io.py",
             "if name != record and (folder / name).exists():", "if False:",
             ("tests/test_out_folders.py",), trains=True),
    Mutation("eval's head pads an 8-px digit by 4 px, half its width", "solo_ncp/commands/_encoder.py",
             "lr=lr, crop_padding=padding, seed=args.seed", "lr=lr, seed=args.seed",
             ("tests/test_eval_cli.py::test_the_head_trains_on_images_padded_for_their_size",), trains=True),
)


def copy_tree(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = ROOT / rel
        if source.is_symlink():  # solo_ncp/zoo_configs -> ../zoo_configs stays a relative link
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).symlink_to(source.readlink())
        elif source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)


def snippet_error(root: Path, mutation: Mutation) -> Optional[str]:
    """Why `mutation` cannot be applied in the tree at `root` (its snippet must occur exactly once),
    or None."""
    count = (root / mutation.path).read_text().count(mutation.old)
    if count == 1:
        return None
    return (f"mutation {mutation.name!r}: its snippet occurs {count} times in {mutation.path} "
            "(expected once): update scripts/mutation_check.py")


def apply(root: Path, mutation: Mutation) -> None:
    error = snippet_error(root, mutation)
    if error is not None:
        raise SystemExit(f"error: {error}")
    path = root / mutation.path
    path.write_text(path.read_text().replace(mutation.old, mutation.new))


def run(mutation: Optional[Mutation], tests: Sequence[str], python: str,
        env: Optional[Dict[str, str]] = None) -> Tuple[bool, float]:
    """(the tests failed, seconds) in a copy of the tree with `mutation` applied (None: unchanged),
    pytest running in the environment `env` (default: this process's)."""
    with tempfile.TemporaryDirectory(prefix="solo-ncp-mutant-") as tmp:
        root = Path(tmp)
        copy_tree(root)
        if mutation is not None:
            apply(root, mutation)
        start = time.time()
        result = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:randomly",
                                 "-p", "no:cacheprovider", *tests],
                                cwd=root, capture_output=True, text=True, env=env)
        return result.returncode != 0, time.time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="mutation names (substrings)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest")
    parser.add_argument("--list", action="store_true", help="print the mutations and their tests, run none")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="mutants tested at once (default: the CPU count)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated run (the whole suite has just passed on this tree)")
    parser.add_argument("--skip-training", action="store_true",
                        help="leave out the mutations whose tests train digits runs (trains=True)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    chosen = [m for m in MUTATIONS if (not args.only or any(o in m.name for o in args.only))
              and not (args.skip_training and m.trains)]
    if args.list:
        for mutation in chosen:
            print(f"{mutation.name} ({mutation.path}): {' '.join(mutation.tests)}")
        return 0
    errors = [e for e in (snippet_error(ROOT, m) for m in chosen) if e is not None]
    if errors:
        print("\n".join(f"error: {e}" for e in errors))
        return 1
    print("| mutation | tests | result | seconds |\n|---|---|---|---|", flush=True)
    if not args.no_baseline:
        tests = sorted({t for m in chosen for t in m.tests})
        failed, seconds = run(None, tests, args.python)
        print(f"| none (baseline) | {' '.join(tests)} | {'FAILED' if failed else 'passed'} | {seconds:.0f} |",
              flush=True)
        if failed:
            print("error: the unmutated tests fail, so no mutation can be judged: fix them first")
            return 1
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    missed = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = pool.map(lambda m: run(m, m.tests, args.python, env), chosen)
        for mutation, (caught, seconds) in zip(chosen, results):
            missed += not caught
            print(f"| {mutation.name} | {' '.join(mutation.tests)} | {'caught' if caught else 'MISSED'} "
                  f"| {seconds:.0f} |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
