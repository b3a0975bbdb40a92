# syntax=docker/dockerfile:1.7
# check=skip=all
# escape=`
FROM busybox
RUN echo a `
  b
