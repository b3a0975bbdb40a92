FROM busybox
ENV DST=/srv/
WORKDIR /w
COPY one.txt ./
COPY --chown=app:app --chmod=0750 app $DST
COPY ["a b.txt", "one.txt", "/multi/"]
COPY app/*.sh /bin/
ADD one.txt /added
COPY <<EOT /etc/greeting
hello
EOT
USER app
RUN ["/bin/run.sh", "--flag"]
