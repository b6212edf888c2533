"""The paper's analyses of a trained counting net (the command is tools/analyze.py).

features  images, views, the Caffe feature function and feature extraction
metrics   norms, neighbours, top neurons, sparsity, Spearman, binned statistics
table5    Table 5 (train vs test downsampling method)
caffelog  parsing a ``caffe train`` log
trainlog  the loss diagnostics in a parsed log, the trivial-solution warning
countmap  the least-squares map from the counting vector to the object count
report    CSV / JSON output
subcommands  the computations of tools/analyze.py's subcommands (also called by ltc.study)
plots     every figure
units     live fc8 units, |phi|^2 and the amplitude check
"""
