FROM busybox
CMD ["a"]
ENTRYPOINT /bin/run it
ENV PATH=/custom
FROM busybox
ENTRYPOINT ["x"]
CMD ["y"]
ENTRYPOINT []
