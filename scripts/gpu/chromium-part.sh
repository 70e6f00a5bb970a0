#!/bin/bash
# Device call (`run` with carry [".chrN"], N = 1, 2): parks part N of Chromium in /tmp/chr, where the next
# call on the same warm machine (within its 30 s idle time) finds it.
mkdir -p /tmp/chr && cp .chr[12]/chr.part.* /tmp/chr/ && ls -la /tmp/chr
