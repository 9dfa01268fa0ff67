#!/bin/bash
# usage: measure.sh SRC LABEL PORT TRANSPORT SUBS M1 M2
SRC=$1; L=$2; PORT=$3; T=$4; N=$5; M1=$6; M2=$7
for M in $M1 $M2; do
  $(dirname $0)/run.sh $SRC $PORT cg ${OUT:-/tmp}/cg-$L-$T-$N-$M.out -- --transport $T --subs $N --msgs $M > ${OUT:-/tmp}/log-$L-$T-$N-$M.txt 2>&1
done
a=$(grep '^totals' ${OUT:-/tmp}/cg-$L-$T-$N-$M1.out | cut -d' ' -f2)
b=$(grep '^totals' ${OUT:-/tmp}/cg-$L-$T-$N-$M2.out | cut -d' ' -f2)
echo "$L $T subs=$N: Ir($M1)=$a Ir($M2)=$b per delivery $(( (b-a) / ((M2-M1)*N) ))"
