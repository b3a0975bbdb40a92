FROM busybox
COPY --bogus=1 a b
