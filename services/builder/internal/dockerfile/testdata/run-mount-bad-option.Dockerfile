FROM busybox
RUN --mount=type=tmpfs,target=/t,mode=0700 echo
