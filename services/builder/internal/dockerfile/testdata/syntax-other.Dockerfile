# syntax=foo/bar:1
FROM busybox
RUN echo a
