#!/usr/bin/env bash
# Side-by-side warm training: reference (50 and 150 steps at batch 64, difference) vs matloop bench gfn warm.
set -u
ARGS=$(cat /tmp/refargs)
OUT=/tmp/final/gfn
mkdir -p $OUT
cd /work/main
for k in 1 2 3; do
  echo "pair $k $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" | tee -a $OUT/log
  for steps in 50 150; do
    ( cd /tmp/refgfn && OMP_NUM_THREADS=1 nice -n -5 /usr/bin/time -f "%e_s_%M_KB" /tmp/refvenv/bin/python train.py $ARGS \
        gflownet.optimizer.n_train_steps=$steps gflownet.optimizer.batch_size.forward=64 >/dev/null 2>$OUT/ref_${k}_${steps}.err; \
      tail -1 $OUT/ref_${k}_${steps}.err | tee -a $OUT/log )
  done
  OMP_NUM_THREADS=1 nice -n -5 .venv/bin/matloop bench gfn --json --no-cold --no-fresh --iterations 100 --samples 2000 --pyxtal-pairs 20 > $OUT/matloop_$k.json 2>$OUT/matloop_$k.err
  python3 -c "import json;d=json.load(open('$OUT/matloop_$k.json'));print({k:v for k,v in d.items() if 'per_s' in k})" | tee -a $OUT/log
done
for k in 1 2 3; do
  OMP_NUM_THREADS=1 nice -n -5 /usr/bin/time -f "%e_s_%M_KB" .venv/bin/matloop gfn sample --untrained -n 1000 --out /tmp/final/u.csv >/dev/null 2>$OUT/fresh_$k.err; tail -1 $OUT/fresh_$k.err | tee -a $OUT/log
done
echo "end $(date +%T)" | tee -a $OUT/log
